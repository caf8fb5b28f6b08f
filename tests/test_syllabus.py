"""The syllabus is the single source of truth: the whole course, in order, matching the files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from om_teach import syllabus
from om_teach.syllabus import SyllabusError

COURSE_ORDER = [
    "00_welcome",
    "01_toolbox",
    "02_federated_learning",
    "03_hydrogen",
    "04_helium",
    "05_cross_org_evaluation",
    "06_cross_org_federated_learning",
    "07_secure_aggregation_web_mobile",
    "08_on_device_ml",
    "09_encrypted_mlaas",
    "10_model_hosting",
    "11_remote_compute",
    "12_lithium",
]


@pytest.fixture(scope="module")
def course() -> syllabus.Syllabus:
    return syllabus.load()


def test_lists_every_module_in_course_order(course):
    """The roadmap's use cases appear as modules in the agreed order, each fully described."""
    assert [m.id for m in course.modules] == COURSE_ORDER
    for m in course.modules:
        assert m.title and m.use_case and m.minutes > 0
        assert 3 <= len(m.objectives) <= 5, m.id
        assert m.status in ("ready", "planned")
        assert isinstance(m.multiprocess, bool)


def test_a_final_certification_exam_closes_the_course(course):
    """Exactly one exam is final, and every module names an exam that exists."""
    finals = [e for e in course.exams if e.final]
    assert len(finals) == 1 and finals[0].id == "certification"
    exam_ids = {e.id for e in course.exams}
    assert all(m.exam in exam_ids for m in course.modules)


def test_every_notebook_on_disk_is_in_the_syllabus(course, root):
    """A notebook the syllabus does not list is an error: it would never run in the course."""
    listed = {str(path.relative_to(root)) for _, path in course.notebook_paths(ready_only=False)}
    on_disk = {
        str(p.relative_to(root))
        for p in (root / "notebooks").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    }
    assert on_disk - listed == set(), "notebooks missing from course/syllabus.toml"


def test_every_ready_module_has_its_notebooks(course):
    """A module marked ready has every notebook it lists; at least the welcome is ready."""
    ready = [m for m in course.modules if m.ready]
    assert "00_welcome" in {m.id for m in ready}
    for module, path in course.notebook_paths():
        assert path.is_file(), f"{module.id} is ready but {path} is missing"


def test_multiprocess_modules_get_the_larger_memory_budget(course):
    """A module that starts a multi-process platform may use 1.6 GB; the others 1 GB."""
    assert course.budget.seconds == 60 and course.budget.cores == 2
    assert course.memory_budget_mb(course.module("00_welcome")) == 1000
    assert course.memory_budget_mb(course.module("03_hydrogen")) == 1600


def test_unknown_module_names_the_known_ones(course):
    with pytest.raises(KeyError, match="known modules: 00_welcome"):
        course.module("99_nope")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('status = "ready"', 'status = "done"', 1), "status 'done'"),
        (lambda s: s.replace("minutes = 30", 'minutes = "thirty"', 1), "'minutes' has the wrong"),
        (lambda s: s.replace('exam = "toolbox"', 'exam = "nope"', 1), "exam 'nope'"),
        (lambda s: s.replace("[budget]", "[budgets]", 1), "missing key 'budget'"),
        (lambda s: s + "\n[[modules\n", "not valid TOML"),
    ],
)
def test_a_malformed_syllabus_names_the_file_and_the_problem(root, tmp_path, edit, message):
    """Bad syllabus files fail with a message that says where and what."""
    text = (root / "course" / "syllabus.toml").read_text()
    bad = tmp_path / "course" / "syllabus.toml"
    bad.parent.mkdir()
    bad.write_text(edit(text))
    with pytest.raises(SyllabusError, match=message) as err:
        syllabus.load(bad)
    assert str(bad) in str(err.value)


def test_course_list_shows_the_syllabus(root):
    """`om-teach course list` prints every module id with its status, and the final exam."""
    out = subprocess.run(
        [sys.executable, "-m", "om_teach.cli", "course", "list"],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    ).stdout
    for module_id in COURSE_ORDER:
        assert module_id in out
    assert "Final exam" in out


def test_repo_root_is_found_from_a_notebook_folder(root, monkeypatch):
    """Notebooks run from their own folder and still find the syllabus."""
    monkeypatch.chdir(root / "notebooks" / "00_welcome")
    assert syllabus.repo_root() == root


def test_repo_root_outside_a_checkout_falls_back_to_the_package(tmp_path, monkeypatch, root):
    monkeypatch.chdir(tmp_path)
    assert Path(syllabus.repo_root()) == root


def test_every_ready_exam_has_a_valid_spec_and_notebook(course, root):
    """A ready exam has exams/<id>/ with a spec that loads, a notebook and a sample key, and it
    certifies modules that exist."""
    from om_teach.grading.spec import load_exam, parameters_cell, read_notebook

    module_ids = {m.id for m in course.modules}
    ready = [e for e in course.exams if e.status == "ready"]
    assert "toolbox" in {e.id for e in ready}
    for entry in ready:
        exam = load_exam(root / "exams" / entry.id)
        assert exam.id == entry.id and set(exam.modules) <= module_ids
        nb = read_notebook(exam.notebook)
        assert "student_id" in parameters_cell(nb).source
        assert (root / "exams" / entry.id / "key" / "checks.py").is_file()
