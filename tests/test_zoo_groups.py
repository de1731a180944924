"""S5 and its representations: the ground truth that s5-mlp studies are checked against."""

import itertools

import pytest
import torch

from tl_interp.errors import SelectionError
from tl_interp.models.zoo import groups


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return groups.multiplication_table()


def test_elements_are_the_120_permutations_in_lexicographic_order_with_identity_first():
    els = groups.elements()
    assert len(els) == len(set(els)) == 120
    assert list(els) == sorted(itertools.permutations(range(5)))
    assert els[groups.identity_index()] == (0, 1, 2, 3, 4)


def test_composition_applies_the_right_factor_first():
    x = (1, 2, 3, 4, 0)  # i -> i + 1
    y = (0, 1, 2, 4, 3)  # swaps 3 and 4
    xy = groups.compose(x, y)
    assert all(xy[i] == x[y[i]] for i in range(5))
    assert xy == (1, 2, 3, 0, 4)
    assert groups.compose(y, x) == (1, 2, 4, 3, 0)  # S5 is not abelian


def test_multiplication_table_matches_compose_everywhere(table):
    els = groups.elements()
    expected = torch.tensor(
        [[groups.element_index(groups.compose(x, y)) for y in els] for x in els]
    )
    assert torch.equal(table, expected)


def test_multiplication_table_is_a_latin_square_with_identity_row_and_column(table):
    arange = torch.arange(120)
    assert torch.equal(table.sort(dim=0).values, arange[:, None].expand(120, 120))
    assert torch.equal(table.sort(dim=1).values, arange[None, :].expand(120, 120))
    assert torch.equal(table[0], arange) and torch.equal(table[:, 0], arange)


def test_multiplication_is_associative(table):
    left = table[table.reshape(-1)].reshape(120, 120, 120)  # [x, y, z] = (x*y)*z
    right = table[:, table]  # [x, y, z] = x*(y*z)
    assert torch.equal(left, right)


def test_inverses_multiply_to_the_identity_on_both_sides(table):
    inv = groups.inverses()
    idx = torch.arange(120)
    assert torch.equal(table[idx, inv], torch.zeros(120, dtype=torch.long))
    assert torch.equal(table[inv, idx], torch.zeros(120, dtype=torch.long))


def test_sign_is_a_homomorphism_to_plus_minus_one_with_60_even_elements(table):
    sign = groups.signs()
    assert torch.equal(sign[table], sign[:, None] * sign[None, :])
    assert int((sign == 1).sum()) == 60
    assert int(sign[groups.element_index((1, 0, 2, 3, 4))]) == -1


@pytest.mark.parametrize("name", groups.REPRESENTATIONS)
def test_every_representation_is_a_homomorphism_on_all_pairs(name, table):
    rho = groups.representation(name, dtype=torch.float64)
    products = torch.einsum("xij,yjk->xyik", rho, rho)  # rho(x) @ rho(y) for all x, y
    torch.testing.assert_close(rho[table], products, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", groups.REPRESENTATIONS)
def test_every_representation_is_orthogonal_and_sends_identity_to_identity(name):
    rho = groups.representation(name, dtype=torch.float64)
    eye = torch.eye(rho.shape[-1], dtype=torch.float64).expand_as(rho)
    torch.testing.assert_close(rho.transpose(-1, -2) @ rho, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(rho[groups.identity_index()], eye[0], rtol=0, atol=1e-12)


def test_representations_have_the_documented_dimensions():
    dims = {name: groups.representation(name).shape[-1] for name in groups.REPRESENTATIONS}
    assert dims == {"trivial": 1, "sign": 1, "natural": 5, "standard": 4, "standard_sign": 4}


def test_natural_representation_moves_basis_vector_i_to_p_of_i():
    rho = groups.representation("natural")
    for g, perm in enumerate(groups.elements()[:10]):
        for i in range(5):
            assert torch.equal(rho[g][:, i], torch.eye(5)[perm[i]])


def test_irreducible_characters_are_orthonormal_and_natural_is_trivial_plus_standard():
    irreps = ["trivial", "sign", "standard", "standard_sign"]
    chars = torch.stack([groups.character(n, dtype=torch.float64) for n in irreps])
    gram = chars @ chars.T / 120
    torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    natural = groups.character("natural", dtype=torch.float64)
    torch.testing.assert_close(natural, chars[0] + chars[2], rtol=0, atol=1e-12)


def test_element_index_rejects_a_non_permutation_with_a_fix():
    with pytest.raises(SelectionError, match=r"not an element of S5; pass a permutation"):
        groups.element_index((0, 0, 1, 2, 3))
