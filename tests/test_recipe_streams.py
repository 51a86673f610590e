"""train.random_streams = recipe against the Trainer itself: the batch order and the SpecAugment spans a real
transformers Trainer draws for a seed (a tiny Wav2Vec2ForCTC with layerdrop, evaluations inside epochs) are
the ones fastctc's TrainerOrder and recipe_span_mask draw, and the span sampler equals transformers'
_compute_mask_indices call for call, the numpy stream left where upstream leaves it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastctc.data.batching import GroupByLengthSampler
from fastctc.models.config import EncoderConfig
from fastctc.train.recipe_streams import TrainerOrder, recipe_masks, recipe_span_mask

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2 import modeling_wav2vec2  # noqa: E402


@pytest.mark.parametrize(
    "shape, prob, span, min_spans, lengths",
    [
        ((8, 50), 0.05, 2, 0, [50, 49, 40, 33, 21, 20, 7, 2]),  # the mini card's: many rows draw no span
        ((5, 200), 0.65, 10, 2, [200, 150, 99, 13, 9]),  # a card's; a row shorter than a span
        ((4, 30), 0.3, 3, 0, None),  # no attention mask: every row the padded length
        ((6, 12), 0.05, 4, 0, [12, 12, 10, 5, 4, 3]),  # a full-length row draws none: nothing at all
        ((3, 768), 0.012, 64, 0, None),  # channel masks (base_100h-like)
        ((7, 64), 0.5, 5, 1, [64, 60, 31, 6, 5, 4, 1]),
    ],
)
@pytest.mark.parametrize("seed", [0, 42, 1234])
def test_span_mask_is_transformers_draw_for_draw(shape, prob, span, min_spans, lengths, seed):
    attention = None
    if lengths is not None:
        attention = (torch.arange(shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
    np.random.seed(seed)
    expected = modeling_wav2vec2._compute_mask_indices(shape, prob, span, attention, min_spans)
    expected_next = np.random.rand()
    np.random.seed(seed)
    got = recipe_span_mask(shape, prob, span, lengths, min_spans)
    assert np.array_equal(got, expected)
    assert np.random.rand() == expected_next  # the stream is left where upstream leaves it


def _tiny_trainer_run(tmp_path, seed: int, layerdrop: float):
    """A real Trainer run, group_by_length, on a tiny Wav2Vec2ForCTC: (its sampler's order per epoch, every
    (time mask, lengths) its training forwards drew, the dataset's lengths, the run's steps per epoch)."""
    import datasets

    transformers.set_seed(seed)
    rng = np.random.default_rng(7)  # the data, apart from every stream under test
    n_train, n_eval, batch = 42, 9, 4
    lengths = rng.integers(700, 2400, n_train + n_eval)
    config = transformers.Wav2Vec2Config(
        vocab_size=6,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=[8, 8, 8],
        conv_kernel=[10, 3, 3],
        conv_stride=[5, 2, 2],
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        layerdrop=layerdrop,
        mask_time_prob=0.3,
        mask_time_length=2,
        mask_time_min_masks=0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        pad_token_id=0,
        ctc_zero_infinity=True,
    )
    model = transformers.Wav2Vec2ForCTC(config)

    def split(idx):
        return datasets.Dataset.from_dict(
            {
                "input_values": [rng.standard_normal(int(lengths[i])).astype(np.float32).tolist() for i in idx],
                "labels": [rng.integers(1, 6, 3).tolist() for _ in idx],
                "input_length": [int(lengths[i]) for i in idx],
            }
        )

    train, evaluation = split(range(n_train)), split(range(n_train, n_train + n_eval))

    def collate(features):
        longest = max(len(f["input_values"]) for f in features)
        values = torch.zeros(len(features), longest)
        mask = torch.zeros(len(features), longest, dtype=torch.long)
        for i, f in enumerate(features):
            values[i, : len(f["input_values"])] = torch.tensor(f["input_values"])
            mask[i, : len(f["input_values"])] = 1
        labels = torch.tensor([f["labels"] for f in features])
        return {"input_values": values, "attention_mask": mask, "labels": labels}

    orders, masks = [], []

    class Recording(torch.utils.data.Sampler):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            orders.append([int(i) for i in self.inner])
            return iter(orders[-1])

    class RecordingTrainer(transformers.Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return Recording(super()._get_train_sampler(*args, **kwargs))

    draw = modeling_wav2vec2._compute_mask_indices

    def recording(shape, mask_prob, mask_length, attention_mask=None, min_masks=0):
        rows = None if attention_mask is None else attention_mask.sum(-1).tolist()
        result = draw(shape, mask_prob, mask_length, attention_mask, min_masks)
        masks.append((result.copy(), rows))
        return result

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        num_train_epochs=3,
        learning_rate=1e-3,
        train_sampling_strategy="group_by_length",
        length_column_name="input_length",
        seed=seed,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        logging_steps=100,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # keeps input_length for the sampler, as the recipe's lengths
    )
    trainer = RecordingTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, data_collator=collate
    )
    modeling_wav2vec2._compute_mask_indices = recording
    try:
        trainer.train()
    finally:
        modeling_wav2vec2._compute_mask_indices = draw
    steps_per_epoch = -(-n_train // batch)
    return orders, masks, lengths[:n_train], steps_per_epoch, config


@pytest.mark.parametrize("seed, layerdrop", [(42, 0.0), (3, 0.4)])
def test_trainer_order_and_masks_are_the_trainers(tmp_path, seed, layerdrop):
    orders, masks, lengths, steps_per_epoch, config = _tiny_trainer_run(tmp_path, seed, layerdrop)
    assert len(orders) == 3
    epochs = len(orders)
    sampler = GroupByLengthSampler(lengths / 16_000, seed, batch_size=4, sample_rate=16_000, frame=320)
    sampler.permutation = TrainerOrder(
        seed=seed,
        n=len(lengths),
        batches_per_epoch=len(sampler),
        steps_per_epoch=len(sampler),
        total_steps=epochs * steps_per_epoch,
        eval_every=4,  # evaluations at steps 4, 8, 12: inside epochs 0, 1 and 2
        layer_draws=config.num_hidden_layers if layerdrop > 0 else 0,
    ).permutation
    for epoch, expected in enumerate(orders):
        assert [i for step in sampler.epoch_batches(epoch) for b in step for i in b] == expected, f"epoch {epoch}"
    # numpy's stream: the Trainer's every time mask, replayed on the same batches from the seed
    assert len(masks) == epochs * steps_per_epoch
    np.random.seed(seed)
    for i, (expected, rows) in enumerate(masks):
        got = recipe_span_mask(expected.shape, config.mask_time_prob, config.mask_time_length, rows, 0)
        assert np.array_equal(got, expected), f"mask {i}"


def test_trainer_order_counts_evaluations_per_epoch():
    order = TrainerOrder(seed=0, n=10, batches_per_epoch=338, steps_per_epoch=338, total_steps=2028, eval_every=200)
    # the mini card: evaluations at 200 | 400 600 | 800 1000 | 1200 | 1400 1600 | 1800 2000
    assert [order.evaluations(e) for e in range(6)] == [1, 2, 2, 1, 2, 2]
    assert TrainerOrder(seed=0, n=10, batches_per_epoch=5, steps_per_epoch=5, total_steps=10).evaluations(0) == 0


def test_recipe_masks_pad_the_trainers_time_mask_to_fastctcs_frames():
    cfg = EncoderConfig(
        hidden_size=32,
        num_attention_heads=4,
        mask_time_prob=0.4,
        mask_time_length=2,
        mask_feature_prob=0.2,
        mask_feature_length=4,
    )
    frames = torch.tensor([20, 17, 9])
    np.random.seed(5)
    time = modeling_wav2vec2._compute_mask_indices(
        (3, 20), 0.4, 2, (torch.arange(20)[None] < frames[:, None]).long(), cfg.mask_time_min_masks
    )
    feature = modeling_wav2vec2._compute_mask_indices((3, 32), 0.2, 4, None, cfg.mask_feature_min_masks)
    np.random.seed(5)
    got = recipe_masks(cfg, frames, 21, row_lengths=True)
    assert got["mask_time_indices"].shape == (3, 21) and not got["mask_time_indices"][:, 20].any()
    assert np.array_equal(got["mask_time_indices"][:, :20].numpy(), time)
    assert np.array_equal(got["mask_feature_indices"].numpy(), feature)
