"""Images at every entrance, on a tiny random LLaDA-V: stdec.generate (PIL, path, data URL),
the CLI (--image) and the server (OpenAI image_url parts through the real openai client).
Each answer equals the engine's decode of the same prompt, expanded by hand; every bad image
is one sentence before any decoding."""

import base64
import io
import subprocess
import sys
import threading
import time

import openai
import pytest
import torch
from PIL import Image

import stdec
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models.llada_v import IMAGE_TOKEN_INDEX
from stdec.serve import ServerConfig, bind, uvicorn_server
from stdec.testing import random_llava_checkpoint

CFG = DecodeConfig(policy="threshold", cache="dual", gen_length=16, block_length=8,
                   stop_at_eos=False)
QUESTION = "What colour is the square?"


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                         dtype=torch.uint8).numpy())


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_llava_checkpoint(tmp_path_factory.mktemp("vl") / "tiny-llava")


@pytest.fixture(scope="module")
def vl(folder):
    return stdec.load(folder, device="cpu")


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "pic.png"
    picture(40, 30, seed=7).save(path)
    return path


def by_hand(tokenizer, text: str, n_images: int) -> list[int]:
    """The chat-templated prompt with one IMAGE_TOKEN_INDEX per "<image>", as LLaVA's
    tokenizer_image_token builds it: each piece tokenized alone, one BOS at the front."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
    pieces = [tokenizer(piece).input_ids for piece in text.split("<image>")]
    assert len(pieces) == n_images + 1
    ids = pieces[0]
    for piece in pieces[1:]:
        ids += [IMAGE_TOKEN_INDEX] + piece[piece[:1] == [tokenizer.bos_token_id]:]
    return ids


def reference(vl, text: str, images: list) -> list[int]:
    model, tok = vl
    return decode(model, [by_hand(tok, text, len(images))], CFG, images=[images]).ids[0].tolist()


def test_generate_reads_pil_images_paths_and_data_urls_alike(vl, png):
    model, tok = vl
    image = Image.open(png).convert("RGB")
    want = reference(vl, "<image>\n" + QUESTION, [image])
    for source in (image, png, str(png), data_url(image)):
        out = stdec.generate(model, tok, QUESTION, CFG, chat=True, images=[source])
        assert out.ids[0].tolist() == want
    placed = stdec.generate(model, tok, f"Look: <image> {QUESTION}", CFG, chat=True,
                            images=image)  # one image, not in a list; where the text says
    assert placed.ids[0].tolist() == reference(vl, f"Look: <image> {QUESTION}", [image])


def test_image_and_text_prompts_in_one_call_decode_as_each_alone(vl):
    model, tok = vl
    prompts = [QUESTION, "Say hello.", "<image> and <image>: which is larger?"]
    images = [[picture(64, 32, seed=1)], None, [picture(20, 40, seed=2), picture(32, 32, seed=3)]]
    together = stdec.generate(model, tok, prompts, CFG, chat=True, images=images)
    for i, (p, im) in enumerate(zip(prompts, images, strict=True)):
        alone = stdec.generate(model, tok, p, CFG, chat=True, images=im)
        assert together.ids[i].tolist() == alone.ids[0].tolist()


def bad_cases(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture")
    cut = tmp_path / "cut.png"
    buf = io.BytesIO()
    picture(64, 64).save(buf, format="PNG")
    cut.write_bytes(buf.getvalue()[:200])
    return [  # (images for the prompt QUESTION, words of the one sentence)
        ([text_file], "is not an image"),
        ([cut], "truncated"),
        ([tmp_path / "missing.png"], "is not a file"),
        (["https://example.com/cat.png"], "network URL"),
        (["data:image/png;base64,@@@"], "not valid base64"),
        ([Image.new("RGB", (9000, 8000))], "too large"),
        ([3], "is a int"),
    ]


def test_bad_images_fail_with_one_sentence_before_decoding(vl, tmp_path, monkeypatch):
    model, tok = vl

    def no_decoding(*args, **kw):
        raise AssertionError("decoding started")

    monkeypatch.setattr("stdec.api.decode", no_decoding)
    for images, words in bad_cases(tmp_path):
        with pytest.raises(StdecError, match=words) as err:
            stdec.generate(model, tok, QUESTION, CFG, images=images)
        assert str(err.value).count(". ") == 0 and "\n" not in str(err.value)
    with pytest.raises(StdecError, match="2 <image> placeholders but 1 images"):
        stdec.generate(model, tok, "<image> <image>", CFG, images=[picture(8, 8)])
    with pytest.raises(StdecError, match="one entry per prompt"):
        stdec.generate(model, tok, ["a", "b"], CFG, images=[[picture(8, 8)]])


def test_images_to_a_text_only_model_are_refused(checkpoint, monkeypatch):
    model, tok = stdec.load(checkpoint, device="cpu")
    monkeypatch.setattr("stdec.api.decode", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(StdecError, match="text-only model"):
        stdec.generate(model, tok, QUESTION, CFG, images=[picture(8, 8)])


# ---- the CLI ----

def cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stdec", *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def test_cli_generate_and_viz_take_images(vl, folder, png, tmp_path, checkpoint):
    model, tok = vl
    options = ["--gen-length", 16, "--block-length", 8, "--policy", "threshold", "--cache",
               "dual", "--no-stop-at-eos", "--chat"]
    run = cli("generate", QUESTION, "--model", folder, "--image", png, *options)
    assert run.returncode == 0, run.stderr
    want = stdec.generate(model, tok, QUESTION, CFG, chat=True, images=[png]).texts[0]
    assert run.stdout == want + "\n"
    out = tmp_path / "order.png"
    run = cli("viz", QUESTION, "--model", folder, "--image", png, "--out", out, *options)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0
    for argv, words in [
        (["--model", checkpoint, "--image", png], "is a text-only model"),
        (["--model", folder, "--image", tmp_path / "none.png"], "is not a file"),
        (["--model", folder, "--image", folder / "config.json"], "is not an image"),
    ]:
        run = cli("generate", QUESTION, *argv)
        assert run.returncode == 2 and run.stdout == ""
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], run.stderr


# ---- the server ----

def start(loaded, **kw):
    sock = bind("127.0.0.1", 0)
    config = ServerConfig(**{"name": "m", "defaults": CFG, "max_batch": 4, **kw})
    server = uvicorn_server(*loaded, config, drain_s=1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    return server, thread, openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)


def ask(client, *parts, stream=False):
    content = [{"type": "image_url", "image_url": {"url": p}}
               if p.startswith(("data:", "/", "file:", "http")) or p.endswith(".png")
               else {"type": "text", "text": p} for p in parts]
    reply = client.chat.completions.create(model="m", max_tokens=16, stream=stream,
                                           messages=[{"role": "user", "content": content}])
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    return reply


def test_server_answers_image_chat_requests(vl, png):
    model, tok = vl
    server, thread, client = start(vl, image_dir=png.parent)
    try:
        image = Image.open(png).convert("RGB")
        want = stdec.generate(model, tok, QUESTION, CFG, chat=True, images=[image]).texts[0]
        reply = ask(client, data_url(image), QUESTION)
        assert reply.choices[0].message.content == want
        assert reply.usage.prompt_tokens == model.prompt_length(
            by_hand(tok, "<image>\n" + QUESTION, 1), [image])
        assert ask(client, data_url(image), QUESTION, stream=True) == want
        assert ask(client, str(png), QUESTION).choices[0].message.content == want  # --image-dir
        assert ask(client, f"file://{png}", QUESTION).choices[0].message.content == want
        for parts, words in [
            ((f"file://{png.parent.parent}/elsewhere.png", QUESTION), "outside the folder"),
            (("../elsewhere.png", QUESTION), "'../elsewhere.png' is outside the folder"),
            (("missing.png", QUESTION), "'missing.png' is not a file"),
            (("https://example.com/cat.png", QUESTION), "network URL"),
            (("data:image/png;base64,AAAA", QUESTION), "is not an image"),
            ((QUESTION + " <image>",), "1 <image> placeholders but 0 images"),
        ]:
            with pytest.raises(openai.BadRequestError) as err:
                ask(client, *parts)
            assert words in err.value.body["message"]
            assert str(png.parent) not in err.value.body["message"]  # no server path shown
        assert ask(client, data_url(image), QUESTION).choices[0].message.content == want
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_relative_image_dir_is_taken_from_where_the_server_starts(vl, png, monkeypatch):
    monkeypatch.chdir(png.parent.parent)
    server, thread, client = start(vl, image_dir=png.parent.name)  # relative
    try:
        monkeypatch.chdir("/")  # a request's path is taken inside --image-dir, not the cwd
        assert ask(client, png.name, QUESTION).choices[0].finish_reason is not None
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_text_only_server_refuses_images_and_local_paths_need_image_dir(checkpoint, vl, png):
    server, thread, client = start(stdec.load(checkpoint, device="cpu"))
    try:
        with pytest.raises(openai.BadRequestError, match="text-only model"):
            ask(client, data_url(picture(16, 16)), QUESTION)
    finally:
        server.should_exit = True
        thread.join(10)
    server, thread, client = start(vl)  # no --image-dir: data URLs only
    try:
        with pytest.raises(openai.BadRequestError, match="--image-dir"):
            ask(client, str(png), QUESTION)
    finally:
        server.should_exit = True
        thread.join(10)


# ---- the harness ----

def test_bench_decodes_the_vision_task_with_its_pictures(vl):
    from stdec.tasks import evaluate, get_task, problem_images

    model, tok = vl
    task = get_task("vision")
    result = evaluate(model, tok, task, "test", CFG, limit=3, batch_size=2)
    problems = task.problems("test")[:3]
    alone = [stdec.generate(model, tok, p.prompt, CFG, chat=True,
                            images=problem_images(p)).texts[0] for p in problems]
    assert [r.output for r in result.records] == alone and result.mean_nfe > 0


def test_stdec_bench_times_the_vision_task_with_its_pictures(folder, tmp_path):
    from stdec.bench import BenchConfig, run_bench

    # the timed passes decode the problems again, pictures and all
    cfg = BenchConfig(model=str(folder), out=str(tmp_path), tasks=("vision",), limit=3,
                      batch_size=2, lengths=("standard",), policies=("fixed:k=4",), repeats=2)
    records = run_bench(cfg, progress=False)
    assert len(records) == 2 and all(len(r["wall_s"]) == 2 for r in records)


def test_bench_refuses_image_tasks_for_a_text_only_model(checkpoint):
    run = cli("bench", "--model", checkpoint, "--tasks", "vision", "--limit", 2)
    assert run.returncode == 2 and "asks questions about images" in run.stderr
    assert "text-only model" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_lavida_server_decodes_the_prompt_generate_does_system_prompt_and_all(tmp_path, png):
    from stdec.api import encode
    from stdec.models.lavida import SYSTEM_PROMPT

    loaded = stdec.load(random_llava_checkpoint(tmp_path / "lavida", lavida="llada"), device="cpu")
    model, tok = loaded
    server, thread, client = start(loaded)
    try:
        image = Image.open(png).convert("RGB")
        want = stdec.generate(model, tok, QUESTION, CFG, chat=True, images=[image]).texts[0]
        reply = ask(client, data_url(image), QUESTION)
        assert reply.choices[0].message.content == want
        (ids,) = encode(tok, [QUESTION], chat=True, images=[[image]], system=SYSTEM_PROMPT)
        assert reply.usage.prompt_tokens == model.prompt_length(ids, [image])
        plain = encode(tok, [QUESTION], chat=True, images=[[image]])[0]
        assert reply.usage.prompt_tokens > model.prompt_length(plain, [image])
    finally:
        server.should_exit = True
        thread.join(10)
