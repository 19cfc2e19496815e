"""EC2's vCPU quotas by instance family, and the vCPUs of an instance type: pure data.

EC2 limits running On-Demand instances and open Spot requests per *class* of families, in
vCPUs, one Service Quotas code per class and market (service code `ec2`). Codes and names as
the EC2 User Guide lists them ("On-Demand Instance quotas", "Spot Instance quotas") and as
`aws service-quotas get-service-quota --service-code ec2 --quota-code CODE` names them; the
doctor compares the name Service Quotas returns with the one here, so a code that ever meant
something else is reported, not trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lambda_src.core.instance_catalog import parse_instance_type


@dataclass(frozen=True)
class QuotaClass:
    key: str  # "standard", "g-vt", ...: the check's name
    families: str  # as AWS names the class: "Standard (A, C, D, H, I, M, R, T, Z)"
    on_demand: str | None  # quota code of running On-Demand instances, None: no such quota
    spot: str | None  # quota code of all Spot Instance requests, None: the class has no Spot

    def code(self, market: str) -> str | None:
        return self.spot if market == "spot" else self.on_demand

    def quota_name(self, market: str) -> str:
        """The name Service Quotas gives the quota."""
        if market == "spot":
            return f"All {self.families} Spot Instance Requests"
        return f"Running On-Demand {self.families} instances"


STANDARD = QuotaClass("standard", "Standard (A, C, D, H, I, M, R, T, Z)", "L-1216C47A", "L-34B43A08")
CLASSES: dict[str, QuotaClass] = {
    c.key: c
    for c in (
        STANDARD,
        QuotaClass("g-vt", "G and VT", "L-DB2E81BA", "L-3819A6DF"),
        QuotaClass("p", "P", "L-417A185B", "L-7212CCBC"),
        QuotaClass("x", "X", "L-7295265B", "L-E3A00192"),
        QuotaClass("f", "F", "L-74FC7D96", "L-88CF9481"),
        QuotaClass("inf", "Inf", "L-1945791B", "L-B5D1601B"),
        QuotaClass("trn", "Trn", "L-2C3B7624", "L-6B0D517C"),
        QuotaClass("dl", "DL", "L-6E869C2A", "L-85EED4F7"),
        QuotaClass("high-memory", "High Memory", "L-43DA4232", None),
        QuotaClass("hpc", "HPC", "L-F7808C92", None),
    )
}
# Family prefixes of several letters that are a class of their own; otherwise the first letter decides.
_PREFIXES = {"inf": "inf", "trn": "trn", "dl": "dl", "hpc": "hpc", "vt": "g-vt"}
_LETTERS = {**{letter: "standard" for letter in "acdhimrtz"}, "g": "g-vt", "p": "p", "x": "x", "f": "f"}


def quota_class(instance_type: str) -> QuotaClass | None:
    """The vCPU quota class of an instance type; None where none applies (mac: Dedicated Hosts)."""
    family = instance_type.split(".", 1)[0].lower()
    if family.startswith("u-"):
        return CLASSES["high-memory"]
    letters = re.match(r"[a-z]*", family)
    lead = letters.group(0) if letters else ""
    if lead in _PREFIXES:
        return CLASSES[_PREFIXES[lead]]
    key = _LETTERS.get(lead[:1]) if lead != "mac" else None
    return CLASSES[key] if key else None


def instance_vcpus(instance_type: str) -> tuple[int, bool] | None:
    """(vCPUs, from the catalog?) of an instance type. The instance catalog's figure where it
    has one; else EC2's size naming (large 2, xlarge 4, Nxlarge 4N), which holds for the sizes
    pools use; None for the others (metal, medium and smaller)."""
    known = getattr(parse_instance_type(instance_type), "vcpus", 0)  # the catalog's figure, where it carries one
    if isinstance(known, int) and known > 0:
        return known, True
    size = instance_type.partition(".")[2]
    if size == "large":
        return 2, False
    found = re.fullmatch(r"(\d*)xlarge", size)
    if found is None:
        return None
    return 4 * int(found.group(1) or 1), False
