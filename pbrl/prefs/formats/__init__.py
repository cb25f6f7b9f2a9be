"""Published preference-label formats: one module per format, each with its reader and writer.

``FORMAT_TABLE`` maps each format name to its reader, its writer and the options the reader
takes; :func:`import_labels`, :func:`export_labels`, :func:`check_import_options` and
:func:`check_export_output` dispatch through it. Formats (docs/preferences.md has the details
and the conventions table):

- ``pt`` (:mod:`.pt`): Preference Transformer ``human_label/<task>/`` files;
- ``uni-rlhf`` (:mod:`.uni_rlhf`): Uni-RLHF crowdsourced label sets;
- ``cpl`` (:mod:`.cpl`): CPL's MetaWorld segment ``.npz``;
- ``imitation`` (:mod:`.imitation`): the ``imitation`` library's ``PreferenceDataset`` pickle.

Index-based formats (pt, uni-rlhf) need the D4RL dataset to turn published indices into
(episode, start) references (:mod:`.qlearning`). Without it the import keeps the published
indices: refs are ``[-1, k, L]`` and ``meta["unresolved"]`` is True until
:func:`resolve_qlearning_refs`. Segment-based formats (cpl, imitation) carry their own steps:
the import builds an *inline* dataset (one episode per segment) that travels with the
preference file. Pickles are read only through :func:`safe_load_pickle` (:mod:`.unpickle`).

Adding a format: a module with ``import_<name>(paths, **options)`` and
``export_<name>(data, out, *, dataset)``, and one :class:`LabelFormat` line in ``FORMAT_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.prefs.data import PreferenceData
from pbrl.prefs.formats.common import segments_dataset
from pbrl.prefs.formats.cpl import export_cpl, import_cpl
from pbrl.prefs.formats.imitation import export_imitation, import_imitation
from pbrl.prefs.formats.pt import PT_SEGMENT_LENGTH, export_pt, import_pt
from pbrl.prefs.formats.qlearning import qlearning_refs, qlearning_starts, resolve_qlearning_refs
from pbrl.prefs.formats.uni_rlhf import export_uni_rlhf, import_uni_rlhf
from pbrl.prefs.formats.unpickle import safe_load_pickle
from pbrl.utils import check_output_file


@dataclass(frozen=True)
class LabelFormat:
    """One published label format.

    ``read(paths, **options)`` returns :class:`PreferenceData`; it is given only the keyword
    options named in ``options`` (of ``dataset``, ``dataset_id``, ``segment_length``,
    ``score_key``, ``capacity``, ``allow_mismatch``), and an import with any other option set
    is refused. A format whose reader takes no ``dataset`` carries its own segments.
    ``write(data, out, dataset=...)`` writes a new folder (``writes_folder``) or one file.
    """

    name: str
    read: Callable[..., PreferenceData]
    write: Callable[..., list[Path]]
    options: tuple[str, ...]
    writes_folder: bool

    @property
    def carries_segments(self) -> bool:
        return "dataset" not in self.options


_INDEX_OPTIONS = ("dataset", "dataset_id", "segment_length", "allow_mismatch")
FORMAT_TABLE: dict[str, LabelFormat] = {
    f.name: f
    for f in (
        LabelFormat("pt", import_pt, export_pt, _INDEX_OPTIONS, writes_folder=True),
        LabelFormat("uni-rlhf", import_uni_rlhf, export_uni_rlhf, _INDEX_OPTIONS, True),
        LabelFormat("cpl", import_cpl, export_cpl, ("dataset_id", "score_key", "capacity"), False),
        LabelFormat("imitation", import_imitation, export_imitation, ("dataset_id",), False),
    )
}
FORMATS = tuple(FORMAT_TABLE)


def get_format(fmt: str) -> LabelFormat:
    """The table entry of ``fmt``; :class:`UnknownIdError` listing the known formats."""
    if fmt not in FORMAT_TABLE:
        raise UnknownIdError(f"unknown label format '{fmt}' (known: {', '.join(FORMATS)})")
    return FORMAT_TABLE[fmt]


def check_import_options(
    fmt: str,
    *,
    dataset_given: bool = False,
    segment_length: int | None = None,
    capacity: int | None = None,
    score_key: str = "rl_sum",
) -> None:
    """The options of an import, before any file is read (PbrlError naming the option)."""
    spec = get_format(fmt)
    if segment_length is not None and segment_length <= 0:
        raise PbrlError(f"--segment-length must be positive, got {segment_length}")
    if segment_length is not None and "segment_length" not in spec.options:
        raise PbrlError(f"--segment-length: {fmt} files carry their own segments; drop it")
    if capacity is not None and capacity <= 0:
        raise PbrlError(f"--capacity must be positive, got {capacity}")
    if capacity is not None and "capacity" not in spec.options:
        takers = " / ".join(f.name for f in FORMAT_TABLE.values() if "capacity" in f.options)
        raise PbrlError(f"--capacity applies to {takers} imports only, not {fmt}")
    if not score_key.strip():
        raise PbrlError("--score-key must name a field of the cpl file")
    if dataset_given and spec.carries_segments:
        raise PbrlError(
            f"--dataset: {fmt} files carry their own segments and use no dataset; drop --dataset"
        )


def import_labels(
    fmt: str,
    paths: Sequence[str | Path],
    *,
    dataset: OfflineDataset | None = None,
    dataset_id: str | None = None,
    segment_length: int | None = None,
    score_key: str = "rl_sum",
    capacity: int | None = None,
    allow_mismatch: bool = False,
) -> PreferenceData:
    """Import published labels of format ``fmt`` from ``paths`` (files or one folder).

    ``dataset`` resolves pt/uni-rlhf indices to episodes (else the result is unresolved);
    the label set's dataset (from its file names, or ``dataset_id``) must be that dataset
    unless ``allow_mismatch``. cpl/imitation carry their own segments: ``dataset`` is refused.
    """
    check_import_options(
        fmt,
        dataset_given=dataset is not None,
        segment_length=segment_length,
        capacity=capacity,
        score_key=score_key,
    )
    if not paths:
        raise DataError(f"{fmt} import: no paths given")
    spec = FORMAT_TABLE[fmt]
    given = {
        "dataset": dataset,
        "dataset_id": dataset_id,
        "segment_length": segment_length,
        "score_key": score_key,
        "capacity": capacity,
        "allow_mismatch": allow_mismatch,
    }
    return spec.read(paths, **{k: v for k, v in given.items() if k in spec.options})


def check_export_output(fmt: str, out: str | Path, what: str = "--output") -> Path:
    """Before any work: a known format, and an output that can be written.

    pt and uni-rlhf write a new folder (it must not exist yet); cpl and imitation one file.
    The parent folder must exist and be writable (:func:`pbrl.utils.check_output_file`).
    """
    spec = get_format(fmt)
    out = Path(out)
    if spec.writes_folder and (out.exists() or out.is_symlink()):
        raise PbrlError(f"{what} {out}: already exists; {fmt} export writes a new folder")
    return check_output_file(out, what)


def export_labels(
    data: PreferenceData,
    fmt: str,
    out: str | Path,
    *,
    dataset: OfflineDataset | None = None,
) -> list[Path]:
    """Write ``data`` in format ``fmt`` at ``out`` (a folder for pt/uni-rlhf, a file otherwise).

    Atomic: nothing is left at ``out`` on error. Returns the written file paths.
    """
    out = check_export_output(fmt, out, "export")
    return FORMAT_TABLE[fmt].write(data, out, dataset=dataset)


__all__ = [
    "FORMATS",
    "FORMAT_TABLE",
    "PT_SEGMENT_LENGTH",
    "LabelFormat",
    "check_export_output",
    "check_import_options",
    "export_labels",
    "get_format",
    "import_cpl",
    "import_imitation",
    "import_labels",
    "import_pt",
    "import_uni_rlhf",
    "qlearning_refs",
    "qlearning_starts",
    "resolve_qlearning_refs",
    "safe_load_pickle",
    "segments_dataset",
]
