"""The step's hand-written gradients equal autodiff of the plain formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itjax.model.llama import lora_matmul
from itjax.training.step import chunked_cross_entropy


def plain_cross_entropy(hidden, head, targets, weights):
  logits = jnp.einsum("btd,dv->btv", hidden, head)
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum((jnp.argmax(logits, -1) == targets) * weights)


@pytest.mark.parametrize("chunk,density", [(4, 0.7), (16, 0.7), (0, 0.7), (2, 0.2), (4, 0.2)])
def test_linear_cross_entropy_matches_autodiff(chunk, density):
  """Dense masks, and sparse ones (a fifth of the positions, one row with none, weights other than 1) where the
  chunks past the longest row's targets are skipped: the same loss, hits and gradients as the plain formula."""
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  hidden = jax.random.normal(k[0], (3, 16, 8))
  head = jax.random.normal(k[1], (8, 50))
  targets = jax.random.randint(k[2], (3, 16), 0, 50)
  weights = (jax.random.uniform(k[3], (3, 16)) < density).astype(jnp.float32)
  if density < 0.5:
    weights = weights.at[1].set(0.0) * jax.random.choice(k[4], jnp.array([1.0, 2.0]), (3, 16))
    assert 0 < weights.sum() and (weights != 0).sum(1).max() <= 16 - max(chunk, 1)  # at least one chunk skipped
  (loss, hits), (loss0, hits0) = (chunked_cross_entropy(hidden, head, targets, weights, chunk),
                                  plain_cross_entropy(hidden, head, targets, weights))
  np.testing.assert_allclose(loss, loss0, rtol=1e-6)
  assert hits == hits0
  scale = lambda f: (lambda h, w: 0.37 * f(h, w)[0])  # a cotangent other than 1
  ours = jax.grad(scale(lambda h, w: chunked_cross_entropy(h, w, targets, weights, chunk)), argnums=(0, 1))
  ref = jax.grad(scale(lambda h, w: plain_cross_entropy(h, w, targets, weights)), argnums=(0, 1))
  for a, b in zip(ours(hidden, head), ref(hidden, head)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  only_hidden = jax.grad(scale(lambda h, w: chunked_cross_entropy(h, w, targets, weights, chunk)))(hidden, head)
  np.testing.assert_allclose(only_hidden, ref(hidden, head)[0], atol=1e-5, rtol=1e-5)


def test_lora_matmul_matches_autodiff():
  k = jax.random.split(jax.random.PRNGKey(1), 5)
  x, x_drop = jax.random.normal(k[0], (2, 5, 6)), jax.random.normal(k[1], (2, 5, 6))
  w, a, b = jax.random.normal(k[2], (6, 7)), jax.random.normal(k[3], (6, 3)), jax.random.normal(k[4], (3, 7))
  plain = lambda x, xd, w, a, b: jnp.sum(jnp.sin(x @ w + (xd @ a) @ b))
  ours = lambda x, xd, w, a, b: jnp.sum(jnp.sin(lora_matmul(x, xd, w, a, b)))
  np.testing.assert_allclose(ours(x, x_drop, w, a, b), plain(x, x_drop, w, a, b), rtol=1e-6)
  for g, g0 in zip(jax.grad(ours, argnums=range(5))(x, x_drop, w, a, b),
                   jax.grad(plain, argnums=range(5))(x, x_drop, w, a, b)):
    np.testing.assert_allclose(g, g0, atol=1e-5, rtol=1e-5)
