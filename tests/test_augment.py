"""Keyed augmentation: crop windows against a numpy reference, flips exact, jit and vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.data import augment_cifar, crop_windows, random_crop, random_flip_left_right
from dlfun.errors import ConfigError, ShapeError


def images_batch(batch=6, height=8, width=10, channels=3, seed=0) -> np.ndarray:
    """Distinct positive values, so every window and mirror is distinguishable (zero = padding)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 2.0, (batch, height, width, channels)).astype(np.float32)


def numpy_window(image: np.ndarray, row: int, col: int, padding: int) -> np.ndarray:
    """Textbook crop: zero-pad (H, W, C) by ``padding`` and take the H x W window at (row, col)."""
    height, width, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return padded[row:row + height, col:col + width]


def matching_offsets(image: np.ndarray, out: np.ndarray, padding: int) -> list[tuple[int, int]]:
    """All (row, col) offsets whose numpy window equals ``out`` exactly."""
    span = range(2 * padding + 1)
    return [(r, c) for r in span for c in span
            if np.array_equal(numpy_window(image, r, c, padding), out)]


@pytest.mark.parametrize("offset", [(0, 0), (4, 4), (8, 8), (0, 8), (3, 1)])
def test_crop_windows_matches_numpy_shifted_window(offset):
    images = images_batch()
    offsets = jnp.array([offset] * images.shape[0], jnp.int32)
    got = np.asarray(crop_windows(jnp.asarray(images), offsets, padding=4))
    for image, out in zip(images, got):
        np.testing.assert_array_equal(out, numpy_window(image, *offset, padding=4))
    if offset == (0, 0):  # top-left window: 4 zero rows and columns, then the image shifted
        np.testing.assert_array_equal(got[:, 4:, 4:], images[:, :-4, :-4])
        assert not got[:, :4].any() and not got[:, :, :4].any()
    if offset == (4, 4):
        np.testing.assert_array_equal(got, images)


def test_random_crop_each_example_is_one_numpy_window_and_offsets_vary():
    images = images_batch(batch=32)
    got = np.asarray(random_crop(jax.random.key(0), jnp.asarray(images), padding=2))
    assert got.shape == images.shape and got.dtype == images.dtype
    found = [matching_offsets(image, out, padding=2) for image, out in zip(images, got)]
    assert all(len(f) == 1 for f in found)  # exactly one valid window each
    assert len({f[0] for f in found}) > 5  # per-example offsets, not one for the batch


def test_random_crop_deterministic_per_key_and_keys_differ():
    images = jnp.asarray(images_batch())
    first = random_crop(jax.random.key(1), images)
    np.testing.assert_array_equal(first, random_crop(jax.random.key(1), images))
    assert not np.array_equal(first, random_crop(jax.random.key(2), images))


def test_random_crop_padding_zero_is_identity():
    images = jnp.asarray(images_batch())
    np.testing.assert_array_equal(random_crop(jax.random.key(0), images, padding=0), images)


def test_flip_is_exact_mirror_or_unchanged_and_both_occur():
    images = images_batch(batch=64)
    got = np.asarray(random_flip_left_right(jax.random.key(3), jnp.asarray(images)))
    flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(got, images)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(got, images)])
    assert np.all(flipped ^ kept)
    assert 10 < flipped.sum() < 54  # about half with probability 0.5
    all_flipped = random_flip_left_right(jax.random.key(3), jnp.asarray(images), probability=1.0)
    np.testing.assert_array_equal(all_flipped, images[:, :, ::-1])


def test_augment_cifar_under_jit_matches_eager_and_is_crop_then_flip():
    images = images_batch(batch=16, height=32, width=32)
    key = jax.random.key(7)
    eager = np.asarray(augment_cifar(key, jnp.asarray(images)))
    jitted = np.asarray(jax.jit(augment_cifar)(key, jnp.asarray(images)))
    np.testing.assert_array_equal(eager, jitted)
    assert eager.shape == (16, 32, 32, 3) and eager.dtype == np.float32
    for image, out in zip(images, eager):  # each output: a padded window, maybe mirrored
        assert matching_offsets(image, out, 4) or matching_offsets(image, out[:, ::-1], 4)


def test_vmap_over_keys_gives_different_augmentations():
    images = jnp.asarray(images_batch())
    keys = jax.random.split(jax.random.key(0), 3)
    out = jax.jit(jax.vmap(augment_cifar, in_axes=(0, None)))(keys, images)
    assert out.shape == (3,) + images.shape
    one = jax.jit(augment_cifar)
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(out[i], one(key, images))
    assert not np.array_equal(out[0], out[1])


def test_vmap_over_examples_with_single_images():
    images = images_batch(batch=4)
    keys = jax.random.split(jax.random.key(5), 4)
    out = np.asarray(jax.vmap(lambda k, x: random_crop(k, x, 3))(keys, jnp.asarray(images)))
    assert out.shape == images.shape
    for image, result in zip(images, out):
        assert len(matching_offsets(image, result, 3)) == 1


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ShapeError, match=r"got shape \(8, 10\)"):
        random_crop(jax.random.key(0), jnp.zeros((8, 10)))
    with pytest.raises(ConfigError, match="non-negative integer, got -1"):
        random_crop(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), padding=-1)
