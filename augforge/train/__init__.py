"""Training and evaluation of the segmentation network: the loop, losses, batches, seeding."""

from augforge.train.evaluate import evaluate, predict_masks
from augforge.train.loop import TrainResult, make_optimizer, make_schedule, plan_steps, train_model
from augforge.train.losses import LOSSES, dice_bce_loss, get_loss, soft_dice_loss

__all__ = [
    "LOSSES",
    "TrainResult",
    "dice_bce_loss",
    "evaluate",
    "get_loss",
    "make_optimizer",
    "make_schedule",
    "plan_steps",
    "predict_masks",
    "soft_dice_loss",
    "train_model",
]
