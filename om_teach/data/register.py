"""A synthetic public register of named people, and the 'de-identified' diabetes records.

The welcome module uses these to show a linkage attack (Sweeney, 2002). The register plays a
voter roll or a gym's membership list: it names people and lists their age, sex, body-mass
index and blood pressure. It holds every patient of the diabetes study among other people,
with its own measurement noise on BMI and blood pressure, generated from its own seed. The
attack code never sees how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import datasets

QUASI_IDENTIFIERS = ("age", "sex", "bmi", "bp")

_FIRST = (  # noqa: SIM905 (a paragraph of names reads better than a list of strings)
    "Ada Alan Amara Ana Ben Bruno Carla Chen Dana David Elif Emil Eva Farah Felix Grace Hana "
    "Hugo Ines Ivan Jada Jonas Kai Kofi Lara Leo Lina Luca Maya Milan Nia Noah Olga Omar Paula "
    "Pedro Priya Rafael Rosa Sami Sara Tariq Tess Uma Victor Wen Yara Yusuf Zoe"
).split()
_LAST = (  # noqa: SIM905
    "Abara Becker Costa Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Larsen Mensah "
    "Novak Okafor Petrov Quinn Rossi Sato Tanaka Urban Varga Weber Xu Yilmaz Zhang Adams Brooks "
    "Cruz Diallo Evans Flores Gupta Hughes Ivanova Jones Kim Lopez Moreau Nair"
).split()


@dataclass(frozen=True)
class Register:
    """The public register, and the ground truth that only its maker knows.

    ``people`` is what anyone can read. ``patient_of`` maps a name to the row of the diabetes
    study it describes (people outside the study are absent); it exists so a lesson can score
    an attack, and an attacker never uses it.
    """

    people: pd.DataFrame
    patient_of: dict[str, int]


def deidentified_records() -> pd.DataFrame:
    """The diabetes study as a hospital might release it: no names, raw units, one row a patient.

    Columns: age (years), sex (1 or 2), bmi (kg/m²), bp (mean arterial pressure, mmHg), six
    blood-serum measures s1..s6, and ``progression``, a measure of the disease a year later.
    """
    raw = datasets.load_diabetes(scaled=False)
    table = pd.DataFrame(raw.data, columns=raw.feature_names)
    table["age"] = table["age"].astype(int)
    table["sex"] = table["sex"].astype(int)
    table["progression"] = raw.target
    return table


def public_register(
    seed: int = 2020,
    *,
    population: int = 1500,
    bmi_noise: float = 0.3,
    bp_noise: float = 2.0,
) -> Register:
    """Build the register: every study patient plus ``population - 442`` other people.

    Patients appear with their own age and sex, and with BMI and blood pressure as the register
    measured them: the study's value plus Gaussian noise (standard deviations ``bmi_noise`` and
    ``bp_noise``), BMI rounded to one decimal and blood pressure to whole mmHg. The other people
    are drawn from the same distribution so that they look alike.
    """
    patients = deidentified_records()[list(QUASI_IDENTIFIERS)]
    if population < len(patients):
        raise ValueError(f"population must hold the {len(patients)} patients, got {population}")
    if len(_FIRST) * len(_LAST) < population:
        raise ValueError(f"population {population} exceeds the {len(_FIRST) * len(_LAST)} names")
    rng = np.random.default_rng(seed)
    others = patients.sample(population - len(patients), replace=True, random_state=rng)
    others = others.assign(
        age=np.clip(others["age"] + rng.integers(-5, 6, len(others)), 18, 90),
        bmi=others["bmi"] + rng.normal(0, 2.0, len(others)),
        bp=others["bp"] + rng.normal(0, 8.0, len(others)),
    )
    people = pd.concat([patients, others], ignore_index=True)
    people["bmi"] = (people["bmi"] + rng.normal(0, bmi_noise, population)).round(1)
    people["bp"] = (people["bp"] + rng.normal(0, bp_noise, population)).round(0)
    combos = rng.choice(len(_FIRST) * len(_LAST), size=population, replace=False)
    names = [f"{_FIRST[c % len(_FIRST)]} {_LAST[c // len(_FIRST)]}" for c in combos]
    people.insert(0, "name", names)
    patient_of = {people.at[i, "name"]: i for i in range(len(patients))}
    shuffled = people.sample(frac=1.0, random_state=rng).reset_index(drop=True)
    return Register(people=shuffled, patient_of=patient_of)
