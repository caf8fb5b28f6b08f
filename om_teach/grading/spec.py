"""The exam format: ``exams/<id>/exam.toml`` (questions, points, pass mark, limits) and the
student's ``exam.ipynb``. Bad specs and notebooks fail with the file and the problem named."""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat

from om_teach.grading.sandbox import Limits

QUESTION_ID = re.compile(r"[a-z0-9_]+")


class ExamError(ValueError):
    """An exam spec or a notebook is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Question:
    """One graded question: the function the student writes, and what it is worth."""

    id: str
    function: str
    points: float
    title: str
    hint: str


@dataclass(frozen=True)
class Exam:
    """An exam folder's spec."""

    folder: Path
    id: str
    title: str
    modules: tuple[str, ...]
    pass_mark: float
    limits: Limits
    questions: tuple[Question, ...]

    @property
    def max_points(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def notebook(self) -> Path:
        return self.folder / "exam.ipynb"


def load_exam(folder: str | Path) -> Exam:
    """Read and validate ``folder/exam.toml``."""
    folder = Path(folder)
    path = folder / "exam.toml"
    if not path.is_file():
        raise ExamError(f"{path}: no such file (is {folder} an exam folder?)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ExamError(f"{path}: not valid TOML: {err}") from None

    def need(table: dict, key: str, kind: type | tuple[type, ...], where: str):
        value = table.get(key)
        if value is None:
            raise ExamError(f"{path}: {where}missing key {key!r}")
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ExamError(f"{path}: {where}{key!r} has the wrong type ({type(value).__name__})")
        return value

    questions = []
    for i, table in enumerate(need(data, "questions", list, "")):
        where = f"questions[{i}]: "
        question = Question(
            id=need(table, "id", str, where),
            function=need(table, "function", str, where),
            points=float(need(table, "points", (int, float), where)),
            title=need(table, "title", str, where),
            hint=need(table, "hint", str, where),
        )
        if not QUESTION_ID.fullmatch(question.id):
            raise ExamError(f"{path}: {where}id {question.id!r} must match [a-z0-9_]+")
        if not question.function.isidentifier():
            raise ExamError(f"{path}: {where}function {question.function!r} is not a name")
        if question.points <= 0:
            raise ExamError(f"{path}: {where}points must be positive")
        questions.append(question)
    if not questions:
        raise ExamError(f"{path}: the exam has no questions")
    if len({q.id for q in questions}) != len(questions):
        raise ExamError(f"{path}: question ids repeat")
    pass_mark = float(need(data, "pass_mark", (int, float), ""))
    if not 0 < pass_mark <= 1:
        raise ExamError(f"{path}: pass_mark must be a fraction in (0, 1], got {pass_mark}")
    limits_table = data.get("limits", {})
    try:
        limits = Limits(**limits_table)
    except TypeError as err:
        raise ExamError(f"{path}: [limits]: {err}") from None
    return Exam(
        folder=folder,
        id=need(data, "id", str, ""),
        title=need(data, "title", str, ""),
        modules=tuple(need(data, "modules", list, "")),
        pass_mark=pass_mark,
        limits=limits,
        questions=tuple(questions),
    )


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a submission, refusing anything that is not a valid nbformat 4 notebook."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise ExamError(f"{path}: no such file") from None
    except Exception as err:  # nbformat raises several kinds for broken JSON and schema errors
        message = str(err).strip().splitlines()[0][:200]
        raise ExamError(f"{path}: not a valid notebook: {message}") from None
    return nb


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The code cell tagged ``parameters``, if any."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    return None


def claimed_student_id(nb: nbformat.NotebookNode) -> str | None:
    """The ``student_id = "..."`` literal in the parameters cell, read without running it."""
    cell = parameters_cell(nb)
    if cell is None:
        return None
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "student_id" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def defined_functions(nb: nbformat.NotebookNode) -> set[str]:
    """Names of the functions defined at top level of the notebook's code cells."""
    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return names
