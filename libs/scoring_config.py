"""The trial-wide scoring configuration (table scoring_config): one codec for its three forms.

    database JSON  <->  ScoringConfig  <->  ghostly.common.v1.ScoringConfig
                               |
                               v
                  AnalysisSettings keyword arguments (the EMG core's scoring inputs)

Written by ingest (SetScoringConfig), read by ingest (every analysis and re-score) and by
statistics (GetScoringConfig). Validation is the EMG core's own (AnalysisSettings), so a
configuration that is stored can always be used. JSON keys (documented in migration 016):
performance_weights, compliance_weights, rpe_effort {"0".."10": score}, bfr_gate [low, high],
game_points_max_by_level {"level": points}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ghostly.common.v1 import common_pb2
from libs.errors import InvalidArgument

PERFORMANCE_KEYS = ("compliance", "symmetry", "effort", "game")
COMPLIANCE_KEYS = ("completion", "intensity", "duration")


@dataclass(frozen=True)
class ScoringConfig:
    version: int
    performance_weights: dict[str, float]
    compliance_weights: dict[str, float]
    rpe_effort: dict[int, float]
    bfr_gate: tuple[float, float]
    game_points_max_by_level: dict[int, int] = field(default_factory=dict)
    created_by: str = ""
    created_at: datetime | None = None
    notes: str | None = None

    # -- database ---------------------------------------------------------------------------
    @classmethod
    def from_row(cls, row: Any) -> ScoringConfig:
        """From a scoring_config row (version, config JSON, created_by, created_at, notes)."""
        c = row["config"]
        return cls(
            version=int(row["version"]),
            performance_weights={k: float(c["performance_weights"][k]) for k in PERFORMANCE_KEYS},
            compliance_weights={k: float(c["compliance_weights"][k]) for k in COMPLIANCE_KEYS},
            rpe_effort={int(k): float(v) for k, v in c["rpe_effort"].items()},
            bfr_gate=(float(c["bfr_gate"][0]), float(c["bfr_gate"][1])),
            game_points_max_by_level={int(k): int(v) for k, v in (c.get("game_points_max_by_level") or {}).items()},
            created_by=row["created_by"],
            created_at=row["created_at"],
            notes=row["notes"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "performance_weights": dict(self.performance_weights),
            "compliance_weights": dict(self.compliance_weights),
            "rpe_effort": {str(k): v for k, v in sorted(self.rpe_effort.items())},
            "bfr_gate": list(self.bfr_gate),
            "game_points_max_by_level": {str(k): v for k, v in sorted(self.game_points_max_by_level.items())},
        }

    # -- EMG core -----------------------------------------------------------------------------
    def settings_kwargs(self) -> dict[str, Any]:
        """AnalysisSettings keyword arguments (a session's own options are applied over them)."""
        return {
            "performance_weights": dict(self.performance_weights),
            "compliance_weights": dict(self.compliance_weights),
            "rpe_effort": dict(self.rpe_effort),
            "bfr_gate_range": self.bfr_gate,
            "game_points_max_by_level": dict(self.game_points_max_by_level),
        }

    def validate(self) -> None:
        """Raise SettingsError (INVALID_ARGUMENT) unless the EMG core accepts every value."""
        from libs.emg.settings import AnalysisSettings  # the core's rules, one copy

        AnalysisSettings(**self.settings_kwargs())

    # -- API ------------------------------------------------------------------------------------
    def to_proto(self) -> common_pb2.ScoringConfig:
        msg = common_pb2.ScoringConfig(
            version=self.version,
            performance_weights=common_pb2.PerformanceWeights(**self.performance_weights),
            compliance_weights=common_pb2.ComplianceWeights(**self.compliance_weights),
            rpe_effort=[common_pb2.RpeEffort(rpe=k, effort_score=v) for k, v in sorted(self.rpe_effort.items())],
            bfr_gate_low_aop=self.bfr_gate[0],
            bfr_gate_high_aop=self.bfr_gate[1],
            game_points_max=[
                common_pb2.GameLevelMax(level=k, max_points=v) for k, v in sorted(self.game_points_max_by_level.items())
            ],
            created_by=self.created_by,
            notes=self.notes or "",
        )
        if self.created_at is not None:
            msg.created_at.FromDatetime(self.created_at)
        return msg

    @classmethod
    def from_proto(cls, msg: common_pb2.ScoringConfig) -> ScoringConfig:
        """A new configuration from a request (version and authorship are assigned by the
        writer); INVALID_ARGUMENT naming the field for anything the core would refuse."""
        if not msg.HasField("performance_weights") or not msg.HasField("compliance_weights"):
            raise InvalidArgument("config.performance_weights and config.compliance_weights are required")
        rpe: dict[int, float] = {}
        for e in msg.rpe_effort:
            if e.rpe in rpe:
                raise InvalidArgument(f"config.rpe_effort lists RPE {e.rpe} twice")
            rpe[e.rpe] = e.effort_score
        levels: dict[int, int] = {}
        for g in msg.game_points_max:
            if g.level in levels:
                raise InvalidArgument(f"config.game_points_max lists level {g.level} twice")
            levels[g.level] = g.max_points
        for name in ("bfr_gate_low_aop", "bfr_gate_high_aop"):
            if not math.isfinite(getattr(msg, name)):
                raise InvalidArgument(f"config.{name} must be a finite percentage")
        if len(msg.notes) > 1000:
            raise InvalidArgument("config.notes must be at most 1000 characters")
        cfg = cls(
            version=0,
            performance_weights={k: getattr(msg.performance_weights, k) for k in PERFORMANCE_KEYS},
            compliance_weights={k: getattr(msg.compliance_weights, k) for k in COMPLIANCE_KEYS},
            rpe_effort=rpe,
            bfr_gate=(msg.bfr_gate_low_aop, msg.bfr_gate_high_aop),
            game_points_max_by_level=levels,
            notes=msg.notes or None,
        )
        cfg.validate()
        return cfg
