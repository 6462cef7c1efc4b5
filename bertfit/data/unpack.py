"""A task's published files, verified and put into the cache in the corpus's canonical layout."""

from __future__ import annotations

from pathlib import Path

from bertfit.data.tasks import Task


def unpacked_at(task: Task, cache_dir: str | None) -> Path:
    """Where a task's files live in the cache once verified: one folder per archive or task."""
    from bertfit.data.download import cache_root

    archive = next((d for d in task.downloads if d.is_archive), None)
    name = archive.filename if archive else task.folder
    return cache_root(cache_dir) / "data" / name


def unpack(task: Task, files: list[Path], cache_dir: str | None) -> Path:
    """Verify the canonical files and put them into the cache; the folder they went to.

    Archives are extracted whole (into a temporary folder, then renamed); plain files are
    copied; MRPC's train/dev files are built from the MSR file and GLUE's dev id list.
    """
    from filelock import FileLock

    import bertfit.data.download as dl

    target = unpacked_at(task, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        for item, path in zip(task.downloads, files):
            if path.name.endswith(".gz") and not item.filename.endswith(".gz"):
                continue  # a compressed copy of a plain file: the checksum is of the plain bytes
            dl.verify(path, item.sha256)
        archive = next((p for d, p in zip(task.downloads, files) if d.is_archive), None)
        if archive is not None:
            dl.extract(archive, target)
        else:
            _copy_files(files, target)
            if task.name == "mrpc":
                _mrpc_train_dev(target)
    return target


def _copy_files(files: list[Path], target: Path) -> None:
    from bertfit.data.readers import read_text
    from bertfit.files import write_text

    for path in files:
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        if not (target / name).exists():
            write_text(target / name, read_text(path))  # .gz copies are stored plain


def _mrpc_train_dev(folder: Path) -> None:
    """GLUE's MRPC train.tsv/dev.tsv: the MSR training file split by GLUE's dev id list."""
    from bertfit.data.readers import iter_records
    from bertfit.files import write_text

    _, id_rows = iter_records(folder / "mrpc_dev_ids.tsv", False)
    dev_ids = {tuple(row[:2]) for _, row in id_rows}
    header, rows = iter_records(folder / "msr_paraphrase_train.txt", True, delimiter="\t")
    kept: dict[str, list[str]] = {"train": [], "dev": []}
    for _, row in rows:
        kept["dev" if (row[1], row[2]) in dev_ids else "train"].append("\t".join(row) + "\n")
    for name, lines in kept.items():
        write_text(folder / f"{name}.tsv", "\t".join(header) + "\n" + "".join(lines))
