"""Exams that certify: the exam spec, the sandboxed grader, the gradebook, and certificates."""
