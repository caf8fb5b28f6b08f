"""The course syllabus, read from ``course/syllabus.toml``: the single source of truth for
which modules exist, in what order, with which notebooks, budgets and exams."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("ready", "planned")


class SyllabusError(ValueError):
    """The syllabus file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Budget:
    """What one notebook may spend, on the course's reference machine."""

    seconds: float
    memory_mb: float
    multiprocess_memory_mb: float
    cores: int


@dataclass(frozen=True)
class Module:
    """One module of the course: a folder of notebooks under ``notebooks/``."""

    id: str
    title: str
    use_case: str
    status: str
    notebooks: tuple[str, ...]
    objectives: tuple[str, ...]
    minutes: int
    exam: str
    multiprocess: bool

    @property
    def ready(self) -> bool:
        return self.status == "ready"


@dataclass(frozen=True)
class Exam:
    """An exam that certifies one or more modules."""

    id: str
    title: str
    status: str
    final: bool = False


@dataclass(frozen=True)
class Syllabus:
    """The whole course, with the repository root its paths are relative to."""

    root: Path
    version: str
    title: str
    budget: Budget
    modules: tuple[Module, ...]
    exams: tuple[Exam, ...]

    def module(self, module_id: str) -> Module:
        """The module called ``module_id``; raises KeyError listing the known ids."""
        for module in self.modules:
            if module.id == module_id:
                return module
        known = ", ".join(m.id for m in self.modules)
        raise KeyError(f"no module {module_id!r} in the syllabus; known modules: {known}")

    def memory_budget_mb(self, module: Module) -> float:
        """The memory budget of a module's notebooks, in MB."""
        if module.multiprocess:
            return self.budget.multiprocess_memory_mb
        return self.budget.memory_mb

    def notebook_paths(self, *, ready_only: bool = True) -> list[tuple[Module, Path]]:
        """Every notebook the syllabus lists, as absolute paths, in course order."""
        return [
            (module, self.root / notebook)
            for module in self.modules
            if module.ready or not ready_only
            for notebook in module.notebooks
        ]


def repo_root() -> Path:
    """The repository (or checkout) that holds ``course/syllabus.toml``.

    It is looked for above the current directory first, then above this package, so that
    notebooks run from their own folder and the CLI run from anywhere both find it.
    """
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "course" / "syllabus.toml").is_file():
                return folder
    raise FileNotFoundError(
        "course/syllabus.toml not found above the current directory or the om_teach package; "
        "run from a checkout of the om-teach repository"
    )


def load(path: str | Path | None = None) -> Syllabus:
    """Read and validate the syllabus (by default the checkout's ``course/syllabus.toml``)."""
    path = Path(path) if path is not None else repo_root() / "course" / "syllabus.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SyllabusError(f"{path}: not valid TOML: {err}") from None
    return _parse(data, path)


def _require(table: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in table:
        raise SyllabusError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SyllabusError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _strings(table: dict, key: str, where: str) -> tuple[str, ...]:
    values = _require(table, key, list, where)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise SyllabusError(f"{where}: {key!r} must be a non-empty list of strings")
    return tuple(values)


def _parse(data: dict, path: Path) -> Syllabus:
    budget_table = _require(data, "budget", dict, str(path))
    where = f"{path} [budget]"
    budget = Budget(
        seconds=_require(budget_table, "seconds", (int, float), where),
        memory_mb=_require(budget_table, "memory_mb", (int, float), where),
        multiprocess_memory_mb=_require(
            budget_table, "multiprocess_memory_mb", (int, float), where
        ),
        cores=_require(budget_table, "cores", int, where),
    )
    exams = []
    for i, table in enumerate(_require(data, "exams", list, str(path))):
        where = f"{path} exams[{i}]"
        exams.append(
            Exam(
                id=_require(table, "id", str, where),
                title=_require(table, "title", str, where),
                status=_status(table, where),
                final=bool(table.get("final", False)),
            )
        )
    exam_ids = {e.id for e in exams}
    if sum(e.final for e in exams) != 1:
        raise SyllabusError(f"{path}: exactly one exam must be marked final = true")

    modules = []
    for i, table in enumerate(_require(data, "modules", list, str(path))):
        where = f"{path} modules[{i}]"
        module = Module(
            id=_require(table, "id", str, where),
            title=_require(table, "title", str, where),
            use_case=_require(table, "use_case", str, where),
            status=_status(table, where),
            notebooks=_strings(table, "notebooks", where),
            objectives=_strings(table, "objectives", where),
            minutes=_require(table, "minutes", int, where),
            exam=_require(table, "exam", str, where),
            multiprocess=_require(table, "multiprocess", bool, where),
        )
        if module.exam not in exam_ids:
            raise SyllabusError(f"{where}: exam {module.exam!r} is not one of the [[exams]]")
        for notebook in module.notebooks:
            if not notebook.startswith(f"notebooks/{module.id}/"):
                raise SyllabusError(
                    f"{where}: notebook {notebook!r} is outside notebooks/{module.id}/"
                )
        modules.append(module)
    ids = [m.id for m in modules]
    if len(set(ids)) != len(ids):
        raise SyllabusError(f"{path}: module ids repeat")
    return Syllabus(
        root=path.resolve().parent.parent,
        version=_require(data, "version", str, str(path)),
        title=_require(data, "title", str, str(path)),
        budget=budget,
        modules=tuple(modules),
        exams=tuple(exams),
    )


def _status(table: dict, where: str) -> str:
    status = _require(table, "status", str, where)
    if status not in STATUSES:
        raise SyllabusError(f"{where}: status {status!r} is not one of {STATUSES}")
    return status
