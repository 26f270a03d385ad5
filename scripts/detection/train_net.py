"""Detectron2 training and evaluation with the transfer configs of this folder.

    solo-mixmask export-detectron2 CHECKPOINT r50.pkl
    python train_net.py --config-file voc0712_faster_rcnn_R_50_C4_24k.yaml --num-gpus 8 \
        MODEL.WEIGHTS r50.pkl OUTPUT_DIR output/voc

Needs Detectron2, which is not on PyPI (see docs/evaluation.md). The configs use one component that
Detectron2 does not ship, registered here: the C4 box head with a norm layer closing res5, so that
the stage moved from the backbone into the head keeps normalised outputs when all layers fine-tune
with SyncBN.
"""

from __future__ import annotations

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` whose res5 stage ends with ``MODEL.RESNETS.NORM``."""

    def _build_res5_block(self, cfg):
        res5, channels = super()._build_res5_block(cfg)
        res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, channels))
        return res5, channels


class Trainer(DefaultTrainer):
    """Picks the Pascal VOC or the COCO evaluator from the dataset name."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if dataset_name.startswith("voc"):
            return PascalVOCDetectionEvaluator(dataset_name)
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=folder)


def setup(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    cli = default_argument_parser().parse_args()
    launch(main, cli.num_gpus, num_machines=cli.num_machines, machine_rank=cli.machine_rank,
           dist_url=cli.dist_url, args=(cli,))
