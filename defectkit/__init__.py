"""defectkit: find and name surface defects on industrial images."""

__version__ = "0.1.0"

__all__ = ["ClassifyOptions", "Defect", "DefectClassifier", "Result", "Taxonomy", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `import defectkit` stays light (no torch until a model is needed).
    if name in ("DefectClassifier", "Result"):
        from defectkit import pipeline

        return getattr(pipeline, name)
    if name == "ClassifyOptions":
        from defectkit.jobs.classify import ClassifyOptions

        return ClassifyOptions
    if name == "Defect":
        from defectkit.defect import Defect

        return Defect
    if name == "Taxonomy":
        from defectkit.taxonomy import Taxonomy

        return Taxonomy
    raise AttributeError(f"module 'defectkit' has no attribute {name!r}")
