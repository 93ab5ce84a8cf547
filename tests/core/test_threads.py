"""single_threaded: one intra-op thread inside, the caller's count restored after (also on
an error), and a training under it gives the same result on 1 and on 2 threads."""
import pytest
import torch

from benchmark.core.threads import single_threaded


def test_one_thread_inside_and_the_callers_count_after():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), single_threaded():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_sae_training_is_the_same_on_1_and_2_threads():
    from methods.sae import train_topk_sae

    vectors = torch.randn(4000, 64, generator=torch.Generator().manual_seed(0)).relu()
    previous, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sae = train_topk_sae(vectors, latents=128, topk=8, steps=200, batch_size=1024, lr=1e-3, seed=0)
            results.append(sae)
    finally:
        torch.set_num_threads(previous)
    one, two = results
    assert torch.equal(one.w_enc, two.w_enc) and torch.equal(one.w_dec, two.w_dec)
