"""captum_cd.attr.masks: token masks from spans, image blocks as group ids and their
masks. (Text spans through a fast tokenizer's offsets need ``tokenizers``: they are in
test_text_spans.py.)"""

import pytest
import torch

from captum_cd import grid_ids, ids_to_masks, token_masks


def test_token_masks():
    masks = token_masks([(0, 2), (3, 4), [1, 3]], 5)
    expected = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(masks, expected)
    with pytest.raises(ValueError, match="outside"):
        token_masks([(3, 7)], 5)


def test_grid_ids_and_ids_to_masks():
    ids = grid_ids(5, 4, 2)  # a partial last row of blocks
    assert ids.shape == (1, 1, 5, 4)
    assert ids[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3], [4, 4, 5, 5]]
    masks = ids_to_masks(ids)
    assert masks.shape == (6, 1, 5, 4) and torch.equal(masks.sum(0), torch.ones(1, 5, 4))
