"""The sampled-generation scheduler (`toolkit.serving.generation`) driven directly on an asyncio
loop, against the runtime: one generation, eight at once with different settings, stop tokens,
cancellation, and a sequence's state continued from where a generation ended."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import runtime
from toolkit.serving.generation import CANCELLED, FUSED_NEWCOMERS, LENGTH, PROMPT_FUSED_MIN, STOP, Generator
from toolkit.serving.generation_settings import GenerationSettings, settings_from
from toolkit.serving.protocol import BadRequest, Unavailable

CATEGORY = np.array([[0.4, -1.0, 0.9]], np.float32)  # the held input of one stream
SETTINGS = [
    GenerationSettings("greedy", max_tokens=23),
    GenerationSettings("temperature", temperature=0.8, seed=1, max_tokens=40),
    GenerationSettings("temperature", temperature=1.3, seed=2, max_tokens=17),
    GenerationSettings("top_k", top_k=3, temperature=0.9, seed=3, max_tokens=31),
    GenerationSettings("top_p", top_p=0.7, seed=4, max_tokens=29),
    GenerationSettings("temperature", seed=5, max_tokens=1),
    GenerationSettings("top_k", top_k=1, seed=6, max_tokens=12),
    GenerationSettings("temperature", temperature=0.8, seed=1, max_tokens=35),  # the same seed as the second
]
PROMPTS = [[4], [4, 2, 7], [1, 1, 9, 3, 0, 10], [5, 6], [2], [8, 8, 8], [3, 2, 1, 0], [4, 2, 7, 7]]
WAIT_S = 10.0  # the longest a test waits for the scheduler to free a slot


@pytest.fixture(scope="module")
def char_folder(tmp_path_factory):
    """The tests' CharGRU (token + category in, logits out, state (2, batch, 7)), sampled feedback."""
    import torch

    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    torch.set_num_threads(1)
    return export_module(make_char_gru(), tmp_path_factory.mktemp("generation") / "char", **CHAR_GRU_SIGNATURE)


@pytest.fixture(scope="module")
def model(char_folder):
    return runtime.load(char_folder)


def reference(model, prompt, settings: GenerationSettings, state=None):
    """The runtime's own: the prompt but its last token teacher-forced, then the sampled loop."""
    prompt = np.asarray(prompt, np.int64)
    if len(prompt) > 1:
        steps = len(prompt) - 1
        sequences = {"token": prompt[:-1].reshape(steps, 1), "category": np.repeat(CATEGORY[None], steps, axis=0)}
        if model.layout == "batch_first":
            sequences = {name: np.swapaxes(value, 0, 1) for name, value in sequences.items()}
        _, state = model.predict(sequences, state)
    x0 = {"token": prompt[-1:], "category": CATEGORY}
    tokens, final = model.generate(x0, settings.max_tokens, state, sampler=settings.sampler())
    return (tokens[0] if model.layout == "batch_first" else tokens[:, 0]).tolist(), final


async def generate(generator, prompt, settings, **options):
    generation = generator.submit(np.asarray(prompt), {"category": CATEGORY[0]}, settings=settings, **options)
    await generation.result()
    return generation


def test_one_generation_equals_the_runtime_for_each_strategy(model):
    generator = Generator(model)
    try:
        for settings, prompt in zip(SETTINGS, PROMPTS):
            generation = asyncio.run(generate(generator, prompt, settings))
            expected, _ = reference(model, prompt, settings)
            assert generation.tokens == expected, settings
            assert generation.finish_reason == LENGTH and len(expected) == settings.max_tokens
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_eight_concurrent_generations_share_ticks_and_equal_each_alone(model):
    generator = Generator(model, delay=0.005)  # the eight start within the delay: one tick of 8 rows

    async def all_at_once():
        held = {"category": CATEGORY[0]}
        generations = [generator.submit(np.asarray(p), held, None, s, True) for s, p in zip(SETTINGS, PROMPTS)]
        await asyncio.gather(*(g.result() for g in generations))
        return generations

    try:
        together = asyncio.run(all_at_once())
        results, ticks, largest = [g.tokens for g in together], generator.ticks, generator.largest_tick
        for generation, settings, prompt in zip(together, SETTINGS, PROMPTS):
            assert generation.tokens == reference(model, prompt, settings)[0], settings
            alone = asyncio.run(generate(generator, prompt, settings, keep_state=True))  # one row a tick
            assert alone.tokens == generation.tokens and np.array_equal(alone.state[0], generation.state[0])
        assert largest == len(SETTINGS)
        assert ticks < sum(s.max_tokens for s in SETTINGS) // 4  # batched, not one run per token
        assert len(set(map(tuple, results))) == len(results)  # the draws differ
    finally:
        generator.close()


def test_many_newcomers_warm_up_before_their_first_tick(model):
    """More than FUSED_NEWCOMERS arriving together are stepped through their prompts (of different
    lengths) back to back: each draws its first token in the round's one tick, not after a tick per
    prompt token, and draws the runtime's token."""
    generator = Generator(model, delay=0.005)
    first = [GenerationSettings(s.strategy, s.temperature, s.top_k, s.top_p, s.seed, max_tokens=1) for s in SETTINGS]

    async def all_at_once():
        held = {"category": CATEGORY[0]}
        generations = [generator.submit(np.asarray(p), held, None, s) for s, p in zip(first, PROMPTS)]
        return await asyncio.gather(*(g.result() for g in generations))

    try:
        assert len(PROMPTS) > FUSED_NEWCOMERS and max(map(len, PROMPTS)) == 6
        results = asyncio.run(all_at_once())
        assert generator.ticks == 1 and generator.largest_tick == len(PROMPTS)
        assert results == [reference(model, p, s)[0] for s, p in zip(first, PROMPTS)]
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_a_stop_token_ends_the_generation_with_it(model):
    settings = GenerationSettings("temperature", temperature=1.2, seed=11, max_tokens=60)
    expected, _ = reference(model, [3, 4], settings)
    stop = expected[5]
    first = expected.index(stop)
    generator = Generator(model)
    try:
        stopped = GenerationSettings("temperature", temperature=1.2, seed=11, max_tokens=60, stop=(stop, 99))
        generation = asyncio.run(generate(generator, [3, 4], stopped))
        assert generation.tokens == expected[: first + 1]
        assert generation.finish_reason == STOP
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_a_reader_that_leaves_cancels_its_generation_and_frees_its_slot(model):
    generator = Generator(model)
    long = GenerationSettings("temperature", seed=0, max_tokens=100_000)

    async def leave_early():
        generation = generator.submit(np.array([1, 2]), {"category": CATEGORY[0]}, settings=long)
        other = generator.submit(np.array([3]), {"category": CATEGORY[0]}, settings=SETTINGS[1])
        seen = 0
        async for chunk in generation.chunks():
            seen += len(chunk)
            if seen >= 5:
                break  # leaving the iteration cancels it
        deadline = time.monotonic() + WAIT_S
        while generator.live > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await other.result()
        return generation, other, seen

    try:
        generation, other, seen = asyncio.run(leave_early())
        assert generation.finish_reason == CANCELLED and seen < 100_000
        assert other.tokens == reference(model, [3], SETTINGS[1])[0]  # the other row went on undisturbed
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_continuing_a_state_equals_generating_the_concatenation(model):
    first = GenerationSettings("temperature", temperature=0.9, seed=21, max_tokens=14)
    second = GenerationSettings("top_k", top_k=4, seed=22, max_tokens=19)
    generator = Generator(model)
    try:
        one = asyncio.run(generate(generator, [2, 5, 1], first, keep_state=True))
        assert one.tokens == reference(model, [2, 5, 1], first)[0]
        assert [s.shape for s in one.state] == [(2, 7)]
        fed = np.array([2, 5, 1, *one.tokens])  # the state after the prompt and every token, bit for bit
        sequences = {"token": fed.reshape(-1, 1), "category": np.repeat(CATEGORY[None], len(fed), axis=0)}
        _, (expected,) = model.predict(sequences)
        assert np.array_equal(one.state[0], expected[:, 0])
        two = asyncio.run(generate(generator, [9, 0], second, state=one.state, keep_state=True))
        whole = [2, 5, 1, *one.tokens, 9, 0]
        assert two.tokens == reference(model, whole, second)[0]
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


@pytest.mark.parametrize("layout", ["time_first", "batch_first"])
def test_long_prompts_and_given_states_in_either_layout(char_folder, tmp_path, layout):
    """A prompt longer than PROMPT_FUSED_MIN warms up in one fused predict, a short one too (few
    arrive at once); both from a given start state, beside each other, equal to the runtime's."""
    folder = char_folder
    if layout == "batch_first":
        from export import export_module
        from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

        folder = export_module(make_char_gru(), tmp_path / "char", layout="batch_first", **CHAR_GRU_SIGNATURE)
    model = runtime.load(folder)
    long = np.random.default_rng(8).integers(0, 11, PROMPT_FUSED_MIN + 9)
    start = np.random.default_rng(9).standard_normal((2, 1, 7)).astype(np.float32)  # (layers, batch, hidden)
    settings = GenerationSettings("top_p", top_p=0.9, seed=12, max_tokens=21)
    generator = Generator(model)

    async def both():
        given = [generator.submit(p, {"category": CATEGORY[0]}, start, settings) for p in (long, long[-3:])]
        return await asyncio.gather(*(g.result() for g in given))

    try:
        results = asyncio.run(both())
        assert results[0] == reference(model, long, settings, (start,))[0]
        assert results[1] == reference(model, long[-3:], settings, (start,))[0]
        assert results[1] != reference(model, long[-3:], settings)[0]  # the start state mattered
    finally:
        generator.close()


def test_parameters_are_checked_with_one_line_each(model):
    given = {"strategy": "top_p", "top_p": 0.5, "seed": 3, "max_tokens": 7, "stop": "1, 4"}
    checked = settings_from(given, 11, 50, False)
    assert checked == GenerationSettings("top_p", top_p=0.5, seed=3, max_tokens=7, stop=(1, 4))
    assert settings_from({}, 11, 50, False) == GenerationSettings()
    refused = [
        ({"strategy": "beam"}, BadRequest, "strategy"),
        ({"max_tokens": 51}, BadRequest, "max_tokens"),
        ({"max_tokens": 1.5}, BadRequest, "max_tokens"),
        ({"stop": "1,x"}, BadRequest, "stop"),
        ({"stop": 11}, BadRequest, "stop"),
        ({"seed": -1}, BadRequest, "seed"),
        ({"temperature": "hot"}, BadRequest, "temperature"),
        ({"stop_text": "."}, BadRequest, "vocabulary"),
        ({"strategy": "top_k"}, runtime.InputValueError, "top_k"),
        ({"strategy": "temperature", "top_p": 0.5}, runtime.InputValueError, "top_p"),
        ({"temperature": 0.0}, runtime.InputValueError, "temperature"),
    ]
    for parameters, error, words in refused:
        with pytest.raises(error, match=words):
            settings_from(parameters, 11, 50, False)
    generator = Generator(model)
    try:
        for prompt, held, words in (
            ([11], {"category": CATEGORY[0]}, "out of range"),
            ([], {"category": CATEGORY[0]}, "at least one token"),
            ([[1, 2]], {"category": CATEGORY[0]}, "at least one token"),
            ([1], {}, "category"),
            ([1], {"category": CATEGORY[0], "day": [1]}, "day"),
        ):
            with pytest.raises(BadRequest, match=words):
                generator.submit(np.asarray(prompt, np.int64), held)
        with pytest.raises(runtime.ShapeError):
            asyncio.run(_submit(generator, {"category": [1.0, 2.0]}))
        nan = np.array(CATEGORY[0], np.float32).copy()
        nan.flat[0] = np.nan
        with pytest.raises(BadRequest, match="NaN or infinity") as caught:
            generator.submit(np.array([1]), {"category": nan})
        assert "allow_nonfinite" not in str(caught.value) and "--allow" not in str(caught.value)
        assert generator.live == 0
    finally:
        generator.close()


async def _submit(generator, held):
    return generator.submit(np.array([1]), held)


def test_a_full_generator_refuses_with_unavailable_until_a_slot_frees(model):
    generator = Generator(model, max_generations=2)
    long = GenerationSettings("temperature", seed=0, max_tokens=100_000)

    async def fill():
        running = [generator.submit(np.array([1]), {"category": CATEGORY[0]}, settings=long) for _ in range(2)]
        with pytest.raises(Unavailable, match="2 generations"):
            generator.submit(np.array([1]), {"category": CATEGORY[0]})
        running[0].cancel()
        deadline = time.monotonic() + WAIT_S
        while generator.live > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        third = generator.submit(np.array([1]), {"category": CATEGORY[0]}, settings=SETTINGS[1])
        running[1].cancel()
        return await third.result()

    try:
        assert asyncio.run(fill()) == reference(model, [1], SETTINGS[1])[0]
        deadline = time.monotonic() + WAIT_S
        while generator.live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_closing_the_generator_ends_its_generations_with_unavailable(model):
    generator = Generator(model)

    async def close_midway():
        endless = GenerationSettings(seed=1, max_tokens=100_000)
        generation = generator.submit(np.array([2]), {"category": CATEGORY[0]}, settings=endless)
        seen = []
        with pytest.raises(Unavailable, match="stopping"):
            async for chunk in generation.chunks():
                seen += chunk
                if len(seen) >= 3 and generator._thread is not None:
                    await asyncio.get_running_loop().run_in_executor(None, generator.close)
        return seen

    seen = asyncio.run(close_midway())
    assert 3 <= len(seen) < 100_000
    assert generator.live == 0 and not generator._thread.is_alive()
    with pytest.raises(Unavailable, match="closed"):
        asyncio.run(_submit(generator, {"category": CATEGORY[0]}))


def test_a_stop_text_across_tokens_of_several_characters(tmp_path):
    """The generated text is the tokens' strings joined; a stop text that ends inside a token, or
    spans two, ends the generation at that token (included)."""
    from export import export_module
    from tests.user_modules import CHAR_GRU_SIGNATURE, make_char_gru

    words = ["ab", "c", "de", "f", "gh", "i", "jk", "l", "mn", "o", " "]
    model = runtime.load(export_module(make_char_gru(), tmp_path / "char", vocabulary=words, **CHAR_GRU_SIGNATURE))
    settings = GenerationSettings("temperature", temperature=1.3, seed=31, max_tokens=60)
    expected, _ = reference(model, [0, 2], settings)
    text = model.vocabulary.decode(expected)
    pieces = [words[t] for t in expected]
    boundary = len(pieces[0]) + len(pieces[1]) + len(pieces[2])  # where the 4th token's string starts
    stop = text[boundary - 1 : boundary + 1]  # the last character of one token and the first of the next
    ends = next(n for n in range(1, len(expected) + 1) if stop in "".join(pieces[:n]))
    generator = Generator(model)
    try:
        stopped = GenerationSettings("temperature", temperature=1.3, seed=31, max_tokens=60, stop_text=(stop,))
        generation = asyncio.run(generate(generator, [0, 2], stopped))
        assert generation.tokens == expected[:ends] and generation.finish_reason == STOP
        assert ends <= 4 and stop in model.vocabulary.decode(generation.tokens)
    finally:
        generator.close()


def test_a_failing_tick_ends_its_generations_with_the_error_and_the_scheduler_goes_on(model, monkeypatch):
    generator = Generator(model)
    draw = Generator._draw
    failures = iter([RuntimeError("a draw broke")])

    def broken(self, rows, logits):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return draw(self, rows, logits)

    monkeypatch.setattr(Generator, "_draw", broken)
    try:
        with pytest.raises(RuntimeError, match="a draw broke"):
            asyncio.run(generate(generator, [1, 2], SETTINGS[1]))
        assert generator.live == 0 and len(generator.pool) == 0
        assert asyncio.run(generate(generator, [3], SETTINGS[3])).tokens == reference(model, [3], SETTINGS[3])[0]
    finally:
        generator.close()


def test_streamed_chunks_send_the_first_token_alone_then_groups_in_order(model):
    settings = GenerationSettings("temperature", temperature=0.8, seed=31, max_tokens=200)
    expected = reference(model, [4, 2], settings)[0]
    generator = Generator(model)

    async def read(settings, group, wait):
        generation = generator.submit(np.array([4, 2]), {"category": CATEGORY[0]}, settings=settings)
        return [chunk async for chunk in generation.chunks(group, wait)]

    try:
        by_count = asyncio.run(read(settings, 8, 60.0))  # the timer never fires: groups of at least 8 but the last
        assert [t for chunk in by_count for t in chunk] == expected
        assert by_count[0] == expected[:1]  # the first token alone: the time to it is the stream's
        assert all(len(chunk) >= 8 for chunk in by_count[1:-1]) and 1 <= len(by_count[-1])
        assert 2 <= len(by_count) <= 1 + -(-199 // 8)
        long = GenerationSettings("temperature", temperature=0.8, seed=32, max_tokens=2000)
        by_time = asyncio.run(read(long, 1000, 0.005))  # 2,000 ticks take far longer than 5 ms: the timer sends
        assert [t for chunk in by_time for t in chunk] == reference(model, [4, 2], long)[0]
        assert len(by_time[0]) == 1 and len(by_time) > 3  # by count alone: 1, 1000, 999
        assert generator.live == 0 and len(generator.pool) == 0
    finally:
        generator.close()


def test_a_generation_that_ended_before_its_reader_woke_is_ended_only_at_its_last_chunk(model):
    settings = GenerationSettings("temperature", temperature=0.8, seed=33, max_tokens=30)
    generator = Generator(model)

    async def late_reader():
        generation = generator.submit(np.array([5]), {"category": CATEGORY[0]}, settings=settings)
        await generation.wait_ended()  # every token drawn before the reader reads the first
        return [(chunk, generation.ended) async for chunk in generation.chunks(8, 0.005)]

    try:
        read = asyncio.run(late_reader())
        assert [t for chunk, _ in read for t in chunk] == reference(model, [5], settings)[0]
        assert len(read[0][0]) == 1  # the first token still alone
        assert [ended for _, ended in read] == [False] * (len(read) - 1) + [True]  # the fronts' final flag
    finally:
        generator.close()
