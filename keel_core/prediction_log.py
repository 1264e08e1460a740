"""The prediction log: every payment the service scored, written off the request path.

Requests append their rows to an in-memory buffer; a background thread writes the buffer every few
seconds as Parquet files, one per day of the payments, under ``<uri>/date=YYYY-MM-DD/``. ``close``
(the service's shutdown hook) writes what is left, so no scored payment is lost on a clean stop. The
use case's ``<name>/prediction_log`` asset compacts a day's files into its lake table.

The URI is a folder or ``s3://bucket/prefix`` (pyarrow's file systems): locally and in production the
spool is a folder of the lake. Each row carries a ``prediction_id``, so a file written twice (a retry
after an error halfway) is deduplicated by the asset, never counted twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

SPOOL = "prediction_log_spool"  # the folder of the lake the service writes to
logger = logging.getLogger(__name__)


def day_folder(day) -> str:
    return f"date={day.isoformat()}"


class PredictionLog:
    def __init__(self, uri: str, flush_seconds: float = 2.0, day_column: str = "transacted_at"):
        """Rows are filed under the day of their ``day_column`` (a timestamp)."""
        self.filesystem, self.root = pyarrow.fs.FileSystem.from_uri(
            uri if "://" in uri else os.path.abspath(uri)
        )
        self.uri = uri
        self.flush_seconds = flush_seconds
        self.day_column = day_column
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = 0
        self._buffer: list[pd.DataFrame] = []
        self._lock = threading.Lock()  # guards the buffer
        self._flushing = threading.Lock()  # one writer at a time: the thread or close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, rows: pd.DataFrame | Mapping[str, Any]) -> None:
        """Queue scored rows (they need ``prediction_id`` and the day column); returns at once.

        ``rows`` is a frame, or columns (arrays of one length; scalars repeat) that the writer turns
        into a frame later: building a frame per request costs more than scoring it.
        """
        with self._lock:
            self._buffer.append(rows)

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(_length(rows) for rows in self._buffer)

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written. On failure the rows stay queued."""
        with self._flushing:
            with self._lock:
                frames, self._buffer = self._buffer, []
            if not frames:
                return 0
            rows = _concat(frames)
            try:
                for day, day_rows in rows.groupby(rows[self.day_column].dt.date):
                    self._write(day, day_rows)
            except BaseException:
                with self._lock:  # put them back in front: written again next time, deduplicated later
                    self._buffer.insert(0, rows)
                raise
            return len(rows)

    def _write(self, day, rows: pd.DataFrame) -> None:
        self._sequence += 1
        folder = f"{self.root}/{day_folder(day)}"
        name = f"{self._writer}-{self._sequence:08d}.parquet"
        self.filesystem.create_dir(folder, recursive=True)
        # Written under a hidden name, then renamed: a reader never sees half a file.
        partial = f"{folder}/_{name}"
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), partial, filesystem=self.filesystem)
        self.filesystem.move(partial, f"{folder}/{name}")

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:
                # Kept in the buffer and retried on the next tick; the error is logged with its cause.
                logger.exception("prediction log: writing to %s failed, will retry", self.uri)

    def close(self) -> None:
        """Stop the background writer and write what is left (raises if that last write fails)."""
        self._stop.set()
        self._thread.join()
        self.flush()


def _is_column(value) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str)


def _length(rows: pd.DataFrame | Mapping[str, Any]) -> int:
    if isinstance(rows, pd.DataFrame):
        return len(rows)
    # Columns: the first that is an array gives the length (scalars such as a date repeat).
    return next(len(column) for column in rows.values() if _is_column(column))


def _concat(buffered: list[pd.DataFrame | Mapping[str, Any]]) -> pd.DataFrame:
    """One frame of everything buffered. Column mappings are joined column by column: a frame per
    request would cost ~0.3 ms each, under the GIL the request handlers need."""
    frames = [rows for rows in buffered if isinstance(rows, pd.DataFrame)]
    mappings = [rows for rows in buffered if not isinstance(rows, pd.DataFrame)]
    if mappings:
        names = list(mappings[0])
        if any(list(rows) != names for rows in mappings):
            raise ValueError(f"prediction log rows with different columns: expected {names}")
        lengths = [_length(rows) for rows in mappings]
        columns = {
            name: np.concatenate(
                [
                    np.asarray(rows[name]) if _is_column(rows[name]) else np.full(n, rows[name])
                    for rows, n in zip(mappings, lengths, strict=True)
                ]
            )
            for name in names
        }
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
