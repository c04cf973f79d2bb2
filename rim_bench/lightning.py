"""`rim-bench-lightning` (or `python -m rim_bench.lightning`): Lightning's own command line
(LightningCLI) over `RIMModule` and the datamodules.

    rim-bench-lightning test --config configs/lightning/smoke.yaml
    rim-bench-lightning test --config configs/lightning/rim_voc21.yaml --data.init_args.root DATA \\
        --model.overrides '{"proposer.sam.checkpoint": "sam_vit_h_4b8939.pth"}' --trainer.devices 4
    rim-bench-lightning validate --config configs/lightning/smoke.yaml           # the same, logged as val/*
    rim-bench-lightning predict --config configs/lightning/smoke.yaml \\
        --data rim_bench.data.datamodule.ImageFolderDataModule --data.images '[photos/]' \\
        --data.classes background,sun,leaf                                       # label maps, no scores
    rim-bench-lightning test --config configs/lightning/smoke.yaml --print_config

There is no ``fit``: the method is training-free. Results (metrics.json, config.yaml with the
resolved rim-bench config, predictions) go to the model's ``output_dir`` override, else to the
logger's folder; the CLI's own config is saved there as ``lightning_config.yaml``. `rim-bench test`
runs the same module with a config of key=value overrides.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rim_bench.data.datamodule import SegmentationDataModule
from rim_bench.lit_module import RIMModule


class RimBenchCLI(LightningCLI):
    """LightningCLI without ``fit``, with a Trainer set up for evaluation."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "fit"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Without --config or --data: the benchmark by name (the smoke set unless --data.init_args.name says).
        parser.set_defaults({"data": {"class_path": "rim_bench.data.datamodule.BenchmarkDataModule"}})


def main(args: list[str] | None = None) -> None:
    RimBenchCLI(
        RIMModule, SegmentationDataModule, subclass_mode_data=True,
        seed_everything_default=False,  # the rim-bench config's `seed` seeds every draw (RIMModule)
        trainer_defaults={"enable_checkpointing": False, "enable_model_summary": False},
        save_config_kwargs={"config_filename": "lightning_config.yaml", "overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
