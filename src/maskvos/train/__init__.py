"""`maskvos finetune`: adapt the prompt and mask path of a SAM2 model to a domain (see `trainer`)."""

from maskvos.train.trainer import FinetuneError, FinetuneResult, FinetuneSettings, finetune

__all__ = ["FinetuneError", "FinetuneResult", "FinetuneSettings", "finetune"]
