"""Unit tests of the pure mapping rules (libs/legacy/mapping.py)."""

from datetime import UTC, datetime, timedelta

from libs.legacy import mapping as M

NOW = datetime(2025, 8, 1, tzinfo=UTC)


def _ar(i, data, created_days, expires_days):
    return {
        "id": f"00000000-0000-0000-0000-00000000000{i}",
        "analytics_data": data,
        "created_at": NOW + timedelta(days=created_days),
        "expires_at": None if expires_days is None else NOW + timedelta(days=expires_days),
    }


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
    ch = {
        "contraction_count": 10,
        "good_contraction_count": 6,
        "mvc_contraction_count": 8,
        "duration_contraction_count": 7,
        "expected_contractions": 12,
        "rms": 0.0002,
        "mav": 0.00015,
        "mpf": None,
        "mdf": 80.5,
        "fatigue_index_fi_nsm5": None,
        "mvc_threshold_actual_value": 0.0003,
        "duration_threshold_actual_value": 1500.0,
        "mvc_estimation_method": "user_defined",
        "avg_duration_ms": 2000.0,
        "signal_processing": {"processing_steps": ["a", "b"]},
        "contractions": [
            {
                "start_time_ms": 1000.0,
                "end_time_ms": 3500.0,
                "duration_ms": 2500.0,
                "mean_amplitude": 0.0001,
                "max_amplitude": 0.0004,
                "is_good": True,
                "meets_mvc": True,
                "meets_duration": True,
            }
        ],
    }
    stats, contr = M.map_channel("CH2", ch, processing_version="1.2.0")
    assert stats["side"] == "right"
    assert stats["total_contractions"] == 10 and stats["good_contractions_both"] == 6
    assert stats["completion_rate"] == 10 / 12
    assert stats["intensity_rate"] == 0.8 and stats["duration_rate"] == 0.7
    assert abs(stats["muscle_compliance_score"] - (10 / 12 + 0.8 + 0.7) / 3) < 1e-12
    assert stats["duration_threshold_seconds"] == 1.5  # ms -> s
    assert abs(stats["mvc_peak_value"] - 0.0004) < 1e-15  # threshold / 0.75
    assert stats["mvc_calculation_method"] == "user_defined"
    assert stats["processing_pipeline"] == "a->b"
    assert stats["mean_frequency_hz"] is None and stats["median_frequency_hz"] == 80.5
    assert "mvc_rms_value" in stats["defaulted"] and "total_contractions" not in stats["defaulted"]
    # keys carried by columns are not repeated in analysis_details.legacy
    assert set(stats["legacy"]) == {
        "expected_contractions",
        "mvc_threshold_actual_value",
        "duration_threshold_actual_value",
        "mvc_estimation_method",
        "avg_duration_ms",
        "signal_processing",
    }
    assert contr == [
        {
            "contraction_index": 0,
            "start_time_s": 1.0,
            "end_time_s": 3.5,
            "duration_s": 2.5,
            "peak_amplitude": 0.0004,
            "mean_amplitude": 0.0001,
            "meets_intensity": True,
            "meets_duration": True,
            "is_good": True,
        }
    ]


def test_map_channel_missing_values_are_flagged_not_invented():
    """Issue 17: an absent value is NULL and listed under "missing", never a 0 in the rates."""
    stats, contr = M.map_channel("X", {"contraction_count": None}, processing_version="v")
    assert stats["total_contractions"] is None and "total_contractions" in stats["missing"]
    assert "contraction_count" in stats["legacy"]  # original null kept for the view
    assert stats["mvc_peak_value"] is None and "mvc_peak_value" in stats["missing"]
    assert stats["completion_rate"] is None and stats["muscle_compliance_score"] is None
    assert stats["duration_threshold_seconds"] == 2.0 and "duration_threshold_seconds" in stats["defaulted"]
    assert stats["side"] is None and contr == []


AUG = {
    "contraction_count": 20,
    "good_contraction_count": 10,
    "mvc_contraction_count": 16,
    "duration_contraction_count": 12,
    "expected_contractions": 12,
    "mvc_threshold_actual_value": 0.00075,
    "duration_threshold_actual_value": 2000.0,
    "rms": 0.0001,
    "mav": 0.00008,
    "mpf": 90.0,
    "mdf": 80.0,
    "fatigue_index_fi_nsm5": 0.1,
    "signal_processing": {"source": "c3d", "processing_steps": ["hp", "rms"]},
    "contractions": [
        {
            "start_time_ms": 1000.0,
            "end_time_ms": 3000.0,
            "duration_ms": 2000.0,
            "mean_amplitude": 0.0005,
            "max_amplitude": 0.0009,
            "is_good": True,
            "meets_mvc": True,
            "meets_duration": True,
        }
    ],
}
SEP = {
    "contraction_count": 20,
    "good_contraction_count": 10,
    "mvc_compliant_count": 16,
    "duration_compliant_count": 12,
    "expected_contractions": 12,
    "mvc75_threshold": 0.00075,
    "estimated_mvc_value": 0.001,
    "mvc_threshold_percentage_used": 75.0,
    "compliance_rate": 0.8777,
    "duration_threshold_actual_value": 2000.0,
    "rms": 0.0001,
    "mav": 0.00008,
    "mpf": 90.0,
    "mdf": 80.0,
    "fatigue_index_fi_nsm5": 0.1,
    "signal_processing_steps": ["hp", "rms"],
    "signal_processing_parameters": {"rms_window_ms": 50},
    "timing_signal": {"n": 1},
    "processed_signal_stats": {},
    "raw_signal_stats": {},
    "contractions": [
        {
            "start_ms": 1000.0,
            "end_ms": 3000.0,
            "mean_amplitude": 0.0005,
            "max_amplitude": 0.0009,
            "is_good": True,
            "meets_mvc": True,
            "meets_duration": True,
        }
    ],
}


def test_both_key_generations_give_the_same_clinical_numbers():
    """Issue 17: Sep 2025 keys used to give intensity/duration counts, rates and MVC 0."""
    a, ca = M.map_channel("CH1", AUG, processing_version="v")
    b, cb = M.map_channel("CH1", SEP, processing_version="v")
    for k in (
        "total_contractions",
        "good_contractions_intensity",
        "good_contractions_duration",
        "good_contractions_both",
        "completion_rate",
        "intensity_rate",
        "duration_rate",
        "muscle_compliance_score",
        "processing_pipeline",
        "duration_threshold_seconds",
    ):
        assert a[k] == b[k], k
    assert b["intensity_rate"] == 0.8 and b["duration_rate"] == 0.6
    assert abs(a["mvc_peak_value"] - 0.001) < 1e-15 and b["mvc_peak_value"] == 0.001
    assert b["mvc_peak_source"] == "estimated_mvc_value" and b["mvc_threshold_percentage"] == 0.75
    assert "mvc_threshold_percentage" not in b["defaulted"] and "mvc_threshold_percentage" in a["defaulted"]
    assert ca == cb  # start_ms/end_ms; duration = end - start
    assert {"compliance_rate", "timing_signal", "raw_signal_stats", "mvc75_threshold"} <= set(b["legacy"])
    assert b["carried"]["mvc_compliant_count"] == "i" and "mvc_contraction_count" not in b["carried"]
    assert b["contraction_keys"] == {
        "start_ms": "f",
        "end_ms": "f",
        "mean_amplitude": "f",
        "max_amplitude": "f",
        "is_good": "b",
        "meets_mvc": "b",
        "meets_duration": "b",
    }


def test_values_outside_the_new_constraints():
    assert M.game_points("24.0") == 24 and M.game_points(24.0) == 24 and M.game_points("24") == 24
    assert M.game_points("") is None and M.game_points("n/a") is None
    assert M.game_level("3.0") == (3, None)
    level, note = M.game_level("12")
    assert level is None and "outside 1-10" in note
    assert M.session_type("therapy") == "training" and M.session_type(" Training ") == "training"
    assert M.session_type("rehab") is None
    assert M.session_date_from_name(None, "P005/Ghostly_Emg_20230321_17-50-17-0881.c3d") == datetime(
        2023, 3, 21, 17, 50, 17, tzinfo=UTC
    )


def test_a_contraction_without_times_cannot_be_mapped():
    import pytest

    with pytest.raises(ValueError, match="no numeric start/end time"):
        M.map_channel("CH1", {"contractions": [{"start_ms": "n/a", "end_ms": 10.0}]}, processing_version="v")


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
