from songkhoe.synth import demography
from songkhoe.synth.rng import Stream


def test_age_bands_and_sex_match_the_cited_structure() -> None:
    rng = Stream("ages")
    n = 60_000
    draws = [demography.age_sex(rng) for _ in range(n)]
    for lo, hi, share in demography.BANDS:
        got = sum(lo <= a <= hi for a, _ in draws) / n
        assert abs(got - share) < 0.01, (lo, hi, got, share)
    assert abs(sum(m for _, m in draws) / n - 0.498) < 0.01
    old = [m for a, m in draws if a >= 65]
    assert abs(sum(old) / len(old) - demography.MALE_SHARE_65) < 0.03
    assert max(a for a, _ in draws) <= 100


def test_weights_are_the_distribution_drawn_from() -> None:
    w = demography.weights_by_age_sex()
    assert abs(sum(w.values()) - 1) < 1e-9
    assert abs(sum(v for (a, m), v in w.items() if m) - demography.MALE_SHARE) < 1e-3
