"""Negative clicks that work (issue 15): with the shipped demo adapter, a negative click placed
inside a leak, where the iterative protocol puts it, removes the leak and keeps the lesion. With
the SAM2-3dMed demo the same is still an expected failure on a slice its propagation swept."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from volsam.clicks import largest_region, lesions_of, next_iterative_click
from volsam.phantoms import TUMOR_LABEL, VARIATION_FULL, PhantomConfig, make_phantom

#: A randomised phantom (of the held-out seed) whose 8 mm lesion the demo adapter's centre click
#: over-segments: its mask leaks into the tissue beside it by three times the lesion's size. The
#: demo model before the click maps left the mask byte-identical after the negative click.
LEAKING_CASE, LEAKING_LESION = (2031, 7), 2


@pytest.fixture(scope="module")
def leaking_lesion():
    image, labels, _ = make_phantom(LEAKING_CASE, PhantomConfig(variation=VARIATION_FULL))
    numbered, lesions = lesions_of(labels.array == TUMOR_LABEL, image.spacing)
    lesion = next(les for les in lesions if les.number == LEAKING_LESION)
    return image, numbered == lesion.number, lesion


def test_a_negative_click_inside_the_adapters_leak_removes_it_and_keeps_the_lesion(leaking_lesion):
    from volsam.methods import get_method
    from volsam.models.sam3d_adapter.checkpoints import load_model
    from volsam.sessions.adapter_session import AdapterSession, AdapterSessionOptions

    image, lesion, info = leaking_lesion
    device = torch.device("cpu")
    session = AdapterSession(load_model(get_method("sam3d-adapter").demo_weights(), device=device), device,
                             AdapterSessionOptions(mode="interactive", preset="ct"))
    session.open_volume(image)
    to_ras = lambda kji: image.ijk_to_ras_points(np.array(kji[::-1], float))  # noqa: E731
    session.add_points([to_ras(info.center_kji)])
    first = session.result.copy() > 0
    leak = largest_region(first & ~lesion)
    assert leak is not None and leak.sum() > 0.3 * lesion.sum()  # the case still leaks
    click = next_iterative_click(first, lesion, image.spacing)
    assert not click.positive and leak[click.kji]  # the protocol's negative click lies in the leak
    session.add_points(negatives=[to_ras(click.kji)])
    corrected = session.result > 0
    assert (corrected & leak).sum() < 0.5 * leak.sum()  # the leak is (mostly) gone
    assert (corrected & lesion).sum() >= 0.9 * (first & lesion).sum()  # the lesion stays


#: A randomised phantom whose 13 mm lesion the demo SAM2-3dMed's centre click sweeps past: the
#: propagated mask runs on through the organ beside the lesion, 1.35 times the lesion's size.
SWEEPING_CASE, SWEEPING_LESION = (2031, 9), 4


@pytest.fixture(scope="module")
def swept_then_clicked():
    """The demo SAM2-3dMed's masks before and after the iterative protocol's negative click."""
    from volsam.methods import WeightsChoice, get_method

    image, labels, _ = make_phantom(SWEEPING_CASE, PhantomConfig(variation=VARIATION_FULL))
    numbered, lesions = lesions_of(labels.array == TUMOR_LABEL, image.spacing)
    info = next(les for les in lesions if les.number == SWEEPING_LESION)
    lesion = numbered == info.number
    method = get_method("sam2-3dmed")
    session = method.open_session(method.load_model(WeightsChoice(weights="demo"), torch.device("cpu")))
    session.open_volume(image)
    session.add_point(np.array(info.center_kji[::-1], float), space="ijk")
    session.run()
    first = session.result.copy() > 0
    sweep = largest_region(first & ~lesion)
    click = next_iterative_click(first, lesion, image.spacing)
    session.add_point(np.array(click.kji[::-1], float), positive=click.positive, space="ijk")
    session.run()
    return lesion, info, first, sweep, click, session.result > 0


def test_the_swept_case_sweeps_and_a_negative_click_never_adds(swept_then_clicked):
    lesion, info, first, sweep, click, corrected = swept_then_clicked
    assert sweep is not None and sweep.sum() > lesion.sum()  # the case still sweeps
    # The protocol's click is negative, on the sweep, on a propagated slice.
    assert not click.positive and sweep[click.kji] and click.kji[0] != info.center_kji[0]
    assert not (corrected & ~first).any()  # negative clicks alone only remove voxels


@pytest.mark.xfail(strict=True, reason="the SAM2-3dMed demo ignores a negative click on a propagated slice: "
                   "the sweep stays (1851 of 1851 voxels); its training stages with corrections on tracked "
                   "slices did not learn it in the time this CPU gave them (issue 15)")
def test_a_negative_click_on_a_swept_slice_removes_the_sweep_and_keeps_the_lesion(swept_then_clicked):
    lesion, _, first, sweep, _, corrected = swept_then_clicked
    assert (corrected & sweep).sum() < 0.5 * sweep.sum()  # the sweep is (mostly) gone
    assert (corrected & lesion).sum() >= 0.9 * (first & lesion).sum()  # the lesion stays
