from songkhoe.synth import admin


def test_34_provinces_and_their_communes_after_the_2025_reform() -> None:
    provinces = admin.provinces()
    assert len(provinces) == 34
    assert sum(p.city for p in provinces.values()) == 6  # centrally-run cities
    communes = [c for p in provinces.values() for c in p.communes]
    assert len(communes) == 3321
    assert len({c.code for c in communes}) == 3321
    assert {c.kind for c in communes} == {"xã", "phường", "đặc khu"}
    assert provinces[1].name == "Thành phố Hà Nội" and provinces[1].title == "thành phố Hà Nội"
    assert provinces[4].title == "tỉnh Cao Bằng"


def test_every_pre_2025_province_went_into_exactly_one_new_province() -> None:
    old = [code for merged in admin.MERGED_FROM.values() for code in merged]
    assert sorted(old) == sorted(admin.OLD_PROVINCES) and len(old) == 63
    assert set(admin.MERGED_FROM) == set(admin.provinces())
    # each new province kept the code of one of the provinces it took in
    assert all(new in merged for new, merged in admin.MERGED_FROM.items())


def test_select_spreads_a_few_communes_over_a_province() -> None:
    hanoi = admin.province(1).communes
    few = admin.select([1], 5)
    assert len(few) == 5 and all(c in hanoi for c in few)
    assert few[0] == hanoi[0] and few[-1] != hanoi[4]
    assert len(admin.select([1, 79])) == len(hanoi) + len(admin.province(79).communes)
    assert len(admin.select(None)) == 3321


def test_unknown_province_code_is_refused_with_the_valid_ones() -> None:
    try:
        admin.province(2)  # Hà Giang: merged into Tuyên Quang (08)
    except ValueError as exc:
        assert "02" in str(exc) and "08 Tuyên Quang" in str(exc)
    else:
        raise AssertionError("province 02 should not exist after the reform")
