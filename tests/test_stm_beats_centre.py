"""A small STM, trained by the default recipe on a few real-size synthetic clips, beats the centre box.

The shape benchmark at real object sizes (``avloc synth``'s default) is the one place where a
centre box is a strong baseline: the objects cover about a quarter of the frame. Each seed
generates its own clips, extracts features with the default encoders, trains with the
defaults of ``avloc train`` (only shorter, smaller and at a higher rate, to fit in seconds) and
scores the test split under the stm protocol.
"""

import pytest

from avloc.data.synth import generate_dataset
from avloc.evaluate import evaluate
from avloc.extract import extract_features
from avloc.train import TrainConfig, fit

SIZE = 64  # 4 x 4 feature cells


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_stm_beats_the_centre_box_on_real_size_objects(tmp_path, one_thread, seed):
    dataset = generate_dataset(tmp_path / "data", clips=60, seed=seed, size=SIZE, seconds=2.0, workers=1,
                               progress=False)
    features = tmp_path / "features.h5"
    extract_features(dataset, features, size=SIZE, progress=False)
    config = TrainConfig(dataset=str(dataset), features=str(features), out=str(tmp_path / "run"), size=SIZE,
                         epochs=30, batch_size=8, lr=1e-3, seed=seed, model_options={"channels": 64})
    best = fit(config, progress=False)
    scores = {source: evaluate(source, dataset, features=str(features), progress=False)["rows"]
              for source in (best, "baseline:centre")}
    model, centre = scores[best]["all"], scores["baseline:centre"]["all"]
    print("MARGIN", seed, model["ciou_at"], centre["ciou_at"], model["n_gt"], scores[best]["single"]["ciou_at"], scores["baseline:centre"]["single"]["ciou_at"])
    assert model["n_gt"] == centre["n_gt"] > 0
    assert model["ciou_at"] >= centre["ciou_at"] + 0.05, (model, centre)
