"""Many videos: a manifest (CSV, JSON Lines or a DAVIS-layout dataset) segmented video by video into
one folder each, in this process, a local process pool or on Ray actors that hold the model, with a
ledger of finished videos so that an interrupted batch continues where it stopped (`run_batch`)."""

from __future__ import annotations

from maskvos.batch.jobs import BatchSettings, ModelSpec, VideoOutcome, run_item
from maskvos.batch.ledger import BatchError, BatchLedger
from maskvos.batch.manifest import BatchItem, ManifestError, read_manifest
from maskvos.batch.run import BatchProgress, BatchSummary, run_batch

__all__ = [
    "BatchError",
    "BatchItem",
    "BatchLedger",
    "BatchProgress",
    "BatchSettings",
    "BatchSummary",
    "ManifestError",
    "ModelSpec",
    "VideoOutcome",
    "read_manifest",
    "run_batch",
    "run_item",
]
