"""The record of a batch in its output folder: which videos are finished, so a batch run again in
the same folder skips them.

`<out>/batch.json` holds the batch's signature (model and settings); `<out>/batch.jsonl` one line per
video that ended (finished or failed), appended and flushed as each one ends, so an interrupt or a
crash loses at most the line being written (a torn last line is ignored). A video that failed is
tried again by the next run; a finished one is not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from maskvos.batch.jobs import VideoOutcome
from maskvos.errors import MaskvosError
from maskvos.io.files import write_bytes_atomic

SIGNATURE_FILE = "batch.json"
LEDGER_FILE = "batch.jsonl"


class BatchError(MaskvosError):
    """A batch that cannot start as asked."""


class BatchLedger:
    """The finished and failed videos of the batch in `out_dir`."""

    def __init__(self, out_dir: Path, signature: dict[str, object]) -> None:
        self.out_dir = out_dir
        self.path = out_dir / LEDGER_FILE
        sig_path = out_dir / SIGNATURE_FILE
        if sig_path.is_file():
            try:
                saved = json.loads(sig_path.read_text())
            except (OSError, json.JSONDecodeError):
                saved = None
            if not isinstance(saved, dict):
                raise BatchError(f"Batch record '{sig_path}' is corrupt; delete it (and {LEDGER_FILE}) to run every video again.")
            if saved != signature:
                differs = next((k for k in signature if saved.get(k) != signature[k]), "settings")
                raise BatchError(
                    f"Folder '{out_dir}' holds a batch run with other settings ({differs} differs); use another "
                    f"--out, or delete its {SIGNATURE_FILE} and {LEDGER_FILE} to redo every video."
                )
        else:
            write_bytes_atomic(sig_path, json.dumps(signature, indent=1).encode())
        self.outcomes: dict[str, VideoOutcome] = {}
        for record in self._read():
            self.outcomes[str(record.get("name"))] = VideoOutcome.from_json(record)

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash: that video runs again
            if isinstance(record, dict) and "name" in record:
                records.append(record)
        return records

    def is_finished(self, name: str) -> bool:
        outcome = self.outcomes.get(name)
        return outcome is not None and outcome.ok

    def record(self, outcome: VideoOutcome) -> None:
        """Append one video's outcome (flushed to disk before returning)."""
        self.outcomes[outcome.name] = outcome
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(outcome.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())
