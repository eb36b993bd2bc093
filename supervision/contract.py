"""The contract's SLA terms, read from YAML (docs/contract.example.yaml) and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from supervision.sla import MissingData


class ContractError(ValueError):
    """The contract file is missing, unreadable or invalid; the message names the key."""


class PenaltyTier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Applies when the period's availability is strictly below this ratio.
    below: Annotated[float, Field(gt=0, le=1)]
    percent_of_monthly_fee: Annotated[float, Field(ge=0, le=100)]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customer: str
    service: str
    availability_target: Annotated[float, Field(gt=0, lt=1)] = 0.999
    monthly_fee: Annotated[float, Field(ge=0)] = 0.0
    currency: str = "EUR"
    # Ordered from the mildest (highest threshold) to the harshest; the harshest tier whose
    # threshold the availability falls below applies (tiers do not add up).
    penalties: list[PenaltyTier] = []
    incident_report_delay_hours: Annotated[int, Field(gt=0)] = 48
    missing_data: MissingData = "unavailable"
    incident_merge_gap_seconds: Annotated[int, Field(ge=0)] = 300
    incident_min_duration_seconds: Annotated[int, Field(ge=0)] = 0
    timezone: str = "Europe/Paris"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone '{value}' (example: Europe/Paris)") from exc
        return value

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Self:
        thresholds = [tier.below for tier in self.penalties]
        if thresholds != sorted(thresholds, reverse=True) or len(set(thresholds)) != len(
            thresholds
        ):
            raise ValueError(
                f"penalties thresholds {thresholds} must be distinct and decreasing (mildest first)"
            )
        if thresholds and thresholds[0] > self.availability_target:
            raise ValueError(
                f"penalty threshold {thresholds[0]} is above the availability target "
                f"{self.availability_target}"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def penalty_tier(self, availability: float | None) -> PenaltyTier | None:
        """The tier that applies to `availability`, or None (target met, or no data)."""
        if availability is None:
            return None
        applicable = [tier for tier in self.penalties if availability < tier.below]
        return applicable[-1] if applicable else None


def load_contract(path: Path) -> Contract:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"cannot read the contract {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ContractError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"{path} must hold a mapping of contract terms")
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(contract)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ContractError(f"{path}: {problems}") from exc
