from model_repository.backend.encoder import plan_groups


def test_every_index_lands_in_exactly_one_group() -> None:
    lengths = [5, 120, 7, 64, 64, 3, 250, 9, 10, 11]
    groups = plan_groups(lengths, max_waste=0.1, max_group=64)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(lengths)))


def test_padding_waste_stays_within_bound() -> None:
    lengths = [3, 4, 5, 30, 31, 33, 200, 210, 256, 12, 12, 13]
    for waste in (0.0, 0.1, 0.5):
        for group in plan_groups(lengths, max_waste=waste, max_group=64):
            real = sum(lengths[i] for i in group)
            padded = max(lengths[i] for i in group) * len(group)
            assert padded <= real * (1 + waste) + 1e-9


def test_equal_lengths_share_one_group_up_to_the_cap() -> None:
    groups = plan_groups([16] * 10, max_waste=0.0, max_group=4)
    assert [len(g) for g in groups] == [4, 4, 2]


def test_short_text_is_not_padded_to_a_long_one() -> None:
    groups = plan_groups([8, 256], max_waste=0.1, max_group=64)
    assert sorted(map(sorted, groups)) == [[0], [1]]


def test_empty_input_gives_no_groups() -> None:
    assert plan_groups([], max_waste=0.1, max_group=8) == []


def test_a_token_budget_groups_short_texts_and_leaves_long_ones_alone() -> None:
    groups = plan_groups([20] * 12 + [150, 150], max_waste=0.1, max_group=64, max_tokens=128)
    assert sorted(len(g) for g in groups) == [1, 1, 6, 6]
