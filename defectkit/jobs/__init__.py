"""The commands' bodies: each job reads its inputs, runs the stages it needs and writes its outputs.
Stages never import jobs."""
