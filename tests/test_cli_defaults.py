"""The command line shows the library's true defaults.

Where a command's options live in a module that imports torch, scikit-learn or Optuna, the command
line states the default again (so that `--help` stays fast); these tests pin each such copy to the
value the library itself uses.
"""

import inspect

import pytest

from defectkit import cli


def cli_defaults(command) -> dict:
    return {name: p.default.default for name, p in inspect.signature(command).parameters.items() if hasattr(p.default, "default")}


def parameter_default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_train_evaluate_and_tune_show_the_classifier_defaults():
    from defectkit.classifier import ClassifierConfig
    from defectkit.jobs.train import train
    from defectkit.jobs.tune import TuneOptions

    config = ClassifierConfig()
    for command in (cli.train, cli.evaluate):
        shown = cli_defaults(command)
        assert shown["pca"] == config.pca and shown["seed"] == config.seed, command.__name__
        assert shown["no_embedding"] == (not config.embedding), command.__name__
    assert cli_defaults(cli.evaluate)["texture"] == config.texture
    assert cli_defaults(cli.train)["texture"] is None  # train chooses it by grouped CV
    assert cli_defaults(cli.train)["cv"] == parameter_default(train, "cv")
    tune = cli_defaults(cli.tune)
    assert (tune["trials"], tune["cv"], tune["storage"], tune["study"], tune["timeout"], tune["no_final"]) == (
        TuneOptions().trials, TuneOptions().cv, TuneOptions().storage, TuneOptions().study, TuneOptions().timeout, not TuneOptions().final)


def test_classify_shows_the_pipeline_and_job_defaults():
    from defectkit.jobs.classify import ClassifyOptions
    from defectkit.pipeline import DefectClassifier

    shown, options = cli_defaults(cli.classify), ClassifyOptions()
    assert shown["min_area"] == parameter_default(DefectClassifier, "min_area")
    assert (shown["coco"], shown["overlays"], shown["overlay_format"], shown["resume"]) == (
        options.coco, options.overlays, options.overlay_format, options.resume)


@pytest.mark.parametrize("command, options", [("segment", "SegmentOptions"), ("extract", "ExtractOptions")])
def test_segment_and_extract_show_their_options(command, options):
    import defectkit.jobs.extract as extract
    import defectkit.jobs.segment as segment

    source = {"SegmentOptions": segment.SegmentOptions, "ExtractOptions": extract.ExtractOptions}[options]()
    shown = cli_defaults(getattr(cli, command))
    # the command line takes hard negatives by default (auto); a library call asks for them by name
    common = [name for name in shown if name in source.__dataclass_fields__ and name != "negatives_from"]
    assert common, "no option in common: the test compares nothing"
    for name in common:
        assert shown[name] == getattr(source, name), name


def test_train_proposer_shows_its_config():
    from defectkit.segmenter.config import TrainProposerConfig

    config, shown = TrainProposerConfig(), cli_defaults(cli.train_proposer)
    for name in ("epochs", "image_size", "batch_size", "input_scale", "loss", "box_fill", "val_fraction", "max_false_per_clean", "seed"):
        assert shown[name] == getattr(config, name), name
    assert (shown["architecture"], shown["encoder"]) == (config.network.architecture, config.network.encoder)


def test_version_is_printed(capsys):
    from typer.testing import CliRunner

    from defectkit import __version__

    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_every_command_that_runs_a_network_takes_device():
    networks = (cli.extract, cli.segment, cli.classify, cli.train, cli.evaluate, cli.tune, cli.pretrain,
                cli.train_proposer, cli.finetune_sam2, cli.evaluate_sam2)
    assert [c.__name__ for c in networks if "device" not in inspect.signature(c).parameters] == []
