"""Unit tests of the pure mapping rules (libs/legacy/mapping.py)."""
from datetime import datetime, timedelta, timezone

from libs.legacy import mapping as M

NOW = datetime(2025, 8, 1, tzinfo=timezone.utc)


def _ar(i, data, created_days, expires_days):
    return {"id": f"00000000-0000-0000-0000-00000000000{i}", "analytics_data": data,
            "created_at": NOW + timedelta(days=created_days),
            "expires_at": None if expires_days is None else NOW + timedelta(days=expires_days)}


def test_choose_analysis_prefers_usable_then_fresh_then_newest():
    good_old_fresh = _ar(1, {"CH1": {}}, -10, 20)
    good_new_expired = _ar(2, {"CH1": {}}, -1, -1)
    empty_newest = _ar(3, {}, 0, 30)
    assert M.choose_analysis([good_new_expired, empty_newest, good_old_fresh], NOW) is good_old_fresh
    assert M.choose_analysis([good_new_expired, empty_newest], NOW) is good_new_expired  # expired beats empty
    assert M.choose_analysis([empty_newest], NOW) is empty_newest
    assert M.choose_analysis([], NOW) is None


def test_session_status():
    assert M.session_status("failed", {"analytics_data": {"CH1": {}}}) == "completed"
    assert M.session_status("completed", {"analytics_data": {}}) == "failed"
    assert M.session_status("completed", None) == "failed"
    assert M.session_status("pending", None) == "pending"
    assert M.session_status("processing", {"analytics_data": {}}) == "failed"


def test_therapist_and_side():
    tid = "3f7468a9-7352-446f-848d-cf948c84e00b"
    assert M.therapist_uuid(tid.upper(), {tid}) == tid
    assert M.therapist_uuid("---", {tid}) is None
    assert M.therapist_uuid("", {tid}) is None
    assert M.therapist_uuid("7d1d9341-29fb-45dd-8521-78e9c4712711", {tid}) is None
    assert M.channel_side("CH1") == "left" and M.channel_side("CH2") == "right"
    assert M.channel_side("Left Quad") == "left" and M.channel_side("CH3") is None


def test_map_channel_units_rates_and_flags():
    ch = {"contraction_count": 10, "good_contraction_count": 6, "mvc_contraction_count": 8,
          "duration_contraction_count": 7, "expected_contractions": 12, "rms": 0.0002, "mav": 0.00015,
          "mpf": None, "mdf": 80.5, "fatigue_index_fi_nsm5": None,
          "mvc_threshold_actual_value": 0.0003, "duration_threshold_actual_value": 1500.0,
          "mvc_estimation_method": "user_defined", "avg_duration_ms": 2000.0,
          "signal_processing": {"processing_steps": ["a", "b"]},
          "contractions": [{"start_time_ms": 1000.0, "end_time_ms": 3500.0, "duration_ms": 2500.0,
                            "mean_amplitude": 0.0001, "max_amplitude": 0.0004, "is_good": True,
                            "meets_mvc": True, "meets_duration": True}]}
    stats, contr = M.map_channel("CH2", ch, processing_version="1.2.0")
    assert stats["side"] == "right"
    assert stats["total_contractions"] == 10 and stats["good_contractions_both"] == 6
    assert stats["completion_rate"] == 10 / 12
    assert stats["intensity_rate"] == 0.8 and stats["duration_rate"] == 0.7
    assert abs(stats["muscle_compliance_score"] - (10 / 12 + 0.8 + 0.7) / 3) < 1e-12
    assert stats["duration_threshold_seconds"] == 1.5                      # ms -> s
    assert abs(stats["mvc_peak_value"] - 0.0004) < 1e-15                  # threshold / 0.75
    assert stats["mvc_calculation_method"] == "user_defined"
    assert stats["processing_pipeline"] == "a->b"
    assert stats["mean_frequency_hz"] is None and stats["median_frequency_hz"] == 80.5
    assert "mvc_rms_value" in stats["defaulted"] and "total_contractions" not in stats["defaulted"]
    # keys carried by columns are not repeated in analysis_details.legacy
    assert set(stats["legacy"]) == {"expected_contractions", "mvc_threshold_actual_value",
                                    "duration_threshold_actual_value", "mvc_estimation_method",
                                    "avg_duration_ms", "signal_processing"}
    assert contr == [{"contraction_index": 0, "start_time_s": 1.0, "end_time_s": 3.5, "duration_s": 2.5,
                      "peak_amplitude": 0.0004, "mean_amplitude": 0.0001, "meets_intensity": True,
                      "meets_duration": True, "is_good": True}]


def test_map_channel_missing_values_are_flagged_not_invented():
    stats, contr = M.map_channel("X", {"contraction_count": None}, processing_version="v")
    assert stats["total_contractions"] == 0 and "total_contractions" in stats["defaulted"]
    assert "contraction_count" in stats["legacy"]          # original null kept for the view
    assert stats["mvc_peak_value"] == 0.0 and "mvc_peak_value" in stats["defaulted"]
    assert stats["duration_threshold_seconds"] == 2.0 and "duration_threshold_seconds" in stats["defaulted"]
    assert stats["side"] is None and contr == []


def test_performance_excludes_effort_and_game():
    left = {"side": "left", "muscle_compliance_score": 0.8}
    right = {"side": "right", "muscle_compliance_score": 0.6}
    p = M.performance([left, right], {"score": "1200"}, 600.0)
    assert abs(p["compliance_score"] - 70.0) < 1e-9
    assert abs(p["symmetry_score"] - (1 - 0.2 / 1.4) * 100) < 1e-9
    assert p["effective_weights"]["effort"] == 0 and p["effective_weights"]["game"] == 0
    assert abs(sum(p["effective_weights"].values()) - 1) < 1e-12
    assert p["game_points_achieved"] == 1200 and p["session_duration_minutes"] == 10.0
    single = M.performance([left], None, None)
    assert "symmetry" in single["excluded"] and single["overall_performance_score"] == single["compliance_score"]
