"""The data sets the course uses, and how to split them across data owners."""

from om_teach.data.datasets import Split, load_breast_cancer, load_diabetes
from om_teach.data.partition import by_feature, dirichlet, iid

__all__ = ["Split", "by_feature", "dirichlet", "iid", "load_breast_cancer", "load_diabetes"]
