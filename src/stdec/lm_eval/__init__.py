"""lm-eval adapter: stdec's decoders as the lm-eval model "stdec", for generate_until tasks.

lm-eval (0.4.x) finds a model only once the module that registers it is imported, and reads
no entry points for models, so run its command line through this module:

    python -m stdec.lm_eval --model stdec --tasks gsm8k --batch_size 16 --device cuda:0 \
        --model_args pretrained=PATH,policy=stdec,cache=dual,gen_length=256,block_length=32

or, from Python, `import stdec.lm_eval` and then `lm_eval.simple_evaluate(model="stdec", ...)`.

model_args: `pretrained` (a checkpoint folder, a Hub id or "testbed"), `dtype`, `quantize`
(int8 or int4: weight-only, stdec.load's), `quantize_head` and `quantize_embeddings`, `chat`
(wrap each context in one user turn of the tokenizer's chat template; default false; or use
lm-eval's --apply_chat_template, not both), and any DecodeConfig field (policy, cache, gen_length,
block_length, stop_at_eos, temperature, tau_high, ...). lm-eval's --batch_size and --device
are used; "auto" batch sizes mean 16.

Per request, `until` cuts the text at the first stop string and `temperature` (with
`do_sample`) sets the sampling temperature. `max_gen_toks` does not change gen_length: a dLLM
decodes a fixed canvas of gen_length tokens, so set gen_length to cover the task's answers.
Multimodal tasks (a request whose third argument has "visual" images) go to a vision-language
checkpoint, each image where its "<image>" stands or at the front; a prompt with several
images takes pad mode, as lmms-eval does, unless model_args set image_mode.
Diffusion LMs give no token log-likelihoods here, so loglikelihood and multiple-choice tasks
fail with a clear error.
"""

import hashlib
import logging
from dataclasses import replace

import torch

try:
    # lm-eval's own models first: its registry stops loading them once any model is registered
    import lm_eval.models  # noqa: F401
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:
    raise ImportError("stdec.lm_eval needs lm-eval; install it with "
                      "pip install 'stdec[lm-eval]'.") from err

from stdec.api import generate_each, load, model_defaults
from stdec.decoding.config import DecodeConfig, build, parse_value
from stdec.errors import StdecError
from stdec.models.images import load_image
from stdec.util import check_quantize

__all__ = ["StdecLM", "decode_config", "main"]

log = logging.getLogger(__name__)
AUTO_BATCH_SIZE = 16
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature")


def to_bool(name: str, value) -> bool:
    return parse_value(name, value, bool)


def decode_config(options: dict, base: dict | None = None) -> DecodeConfig:
    """A validated DecodeConfig from model_args entries (strings or lm-eval-parsed values),
    over `base`, the checkpoint's decoding defaults."""
    known = DecodeConfig.option_help()
    for name in options:
        if name not in known:
            valid = ", ".join(["pretrained", "batch_size", "device", "dtype", "quantize",
                               "quantize_head", "quantize_embeddings", "chat", *known])
            raise StdecError(f"unknown stdec model_args key {name!r}; the valid keys are {valid}.")
    # lm-eval parses what it can (cache=none into None): read every value as its text
    return build({k: "none" if v is None else str(v) for k, v in options.items()}, base)


def cut_at_stop(text: str, stops: list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(ends)] if ends else text


def _batch_size(value) -> int:
    if isinstance(value, str) and value.strip().lower().startswith("auto"):
        return AUTO_BATCH_SIZE
    size = parse_value("batch_size", value, int)
    if size < 1:
        raise StdecError(f"batch_size must be a positive integer, got {value!r}.")
    return size


def _device(value: str | None) -> str | None:
    # lm-eval passes --device, default "cuda:0", even on machines without CUDA
    if value and str(value).startswith("cuda") and not torch.cuda.is_available():
        log.warning("stdec: no CUDA device here, so the model runs on the CPU instead of %s.",
                    value)
        return "cpu"
    return value


def request_seed(seed: int, prompt: str) -> int:
    """A request's sampling seed from the run's seed and its prompt (lm-eval gives requests
    no id): reproducible however requests are batched or sharded."""
    digest = hashlib.blake2b(f"{seed}|{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@register_model("stdec")
class StdecLM(LM):
    """A stdec model and decoding config behind lm-eval's generate_until."""

    MULTIMODAL = True  # lm-eval's flag: requests may carry images (a text model refuses them)

    def __init__(self, pretrained: str = "testbed", batch_size: int | str = AUTO_BATCH_SIZE,
                 max_batch_size: int | None = None,  # lm-eval passes it; unused
                 device: str | None = None,
                 dtype: str | None = None, quantize: str | None = None,
                 quantize_head: bool | str = False, quantize_embeddings: bool | str = False,
                 chat: bool | str = False, **options):
        super().__init__()
        self.image_mode_given = "image_mode" in options
        self.config = decode_config(options)  # fail on bad options before loading weights
        self.chat = to_bool("chat", chat)
        self.batch_size = _batch_size(batch_size)
        dtype = None if dtype in (None, "auto") else str(dtype)
        quantize = None if quantize in (None, "none") else str(quantize)
        quantize_head = to_bool("quantize_head", quantize_head)
        quantize_embeddings = to_bool("quantize_embeddings", quantize_embeddings)
        check_quantize(quantize, quantize_head, quantize_embeddings)
        self.pretrained = str(pretrained)
        self.model, self.tokenizer = load(self.pretrained, dtype=dtype, device=_device(device),
                                          quantize=quantize, quantize_head=quantize_head,
                                          quantize_embeddings=quantize_embeddings)

        self.config = decode_config(options, model_defaults(self.model))  # over the checkpoint's
        self._device = self.model.device
        self._warned: set[str] = set()

    def _warn_once(self, message: str):
        if message not in self._warned:
            self._warned.add(message)
            log.warning("stdec: %s", message)

    def request_config(self, gen_kwargs: dict | None) -> tuple[DecodeConfig, list[str]]:
        """The DecodeConfig and stop strings for one request's gen_kwargs."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or []
        stops = [until] if isinstance(until, str) else list(until)
        max_gen = kwargs.get("max_gen_toks")
        if max_gen is not None and int(max_gen) > self.config.gen_length:
            self._warn_once(f"the task asks for up to {max_gen} tokens but gen_length is "
                            f"{self.config.gen_length}; longer answers are cut (raise "
                            "gen_length in model_args).")
        ignored = sorted(set(kwargs) - set(GEN_KWARGS))
        if ignored:
            self._warn_once(f"ignoring gen_kwargs {', '.join(ignored)}.")
        do_sample, temperature = kwargs.get("do_sample"), kwargs.get("temperature")
        if do_sample is not None and not to_bool("do_sample", do_sample):
            temperature = 0.0
        elif temperature is None:
            temperature = 1.0 if do_sample is not None else self.config.temperature
        temperature = parse_value("temperature", temperature, float)
        if temperature == self.config.temperature:
            return self.config, stops
        return replace(self.config, temperature=temperature), stops

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Every request in one engine run of batch_size slots: a finished request's slot
        takes the next at once, whatever its temperature."""
        from tqdm import tqdm

        if not requests:
            return []
        prompts = [req.args[0] for req in requests]
        images = [request_images(req) for req in requests]
        configs, stops = [], []
        for prompt, req, im in zip(prompts, requests, images, strict=True):
            config, stop = self.request_config(req.args[1])
            if config.temperature > 0:  # its own seed: the same text however it is batched
                config = replace(config, seed=request_seed(config.seed, prompt))
            if len(im) > 1 and not self.image_mode_given:  # lmms-eval's multi-image mode
                config = replace(config, image_mode="pad")
            configs.append(config)
            stops.append(stop)
        bar = tqdm(total=len(requests), desc="stdec generate_until",
                   disable=disable_tqdm or self.rank != 0)
        texts: list[str] = [""] * len(requests)

        def finished(i: int, text: str):
            texts[i] = cut_at_stop(text, stops[i])
            self.cache_hook.add_partial("generate_until", requests[i].args, texts[i])
            bar.update(1)

        visual = {"images": images} if any(images) else {}
        generate_each(self.model, self.tokenizer, prompts, configs, chat=self.chat,
                      batch_size=self.batch_size, on_finish=finished, **visual)
        bar.close()
        return texts

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise StdecError(NO_LOGLIKELIHOOD)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise StdecError(NO_LOGLIKELIHOOD)

    # lm-eval's --apply_chat_template
    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        if self.chat:
            raise StdecError("chat=true and --apply_chat_template would both apply the chat "
                             "template; use one of them.")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)


def request_images(req) -> list:
    """The request's images: lm-eval puts {"visual": image or list} third in its arguments."""
    extra = req.args[2] if len(req.args) > 2 and isinstance(req.args[2], dict) else {}
    visual = extra.get("visual")
    if visual is None:
        return []
    return [load_image(v) for v in (visual if isinstance(visual, list | tuple) else [visual])]


NO_LOGLIKELIHOOD = ("stdec's diffusion LMs give no token log-likelihoods, so loglikelihood and "
                    "multiple-choice tasks cannot run; use generate_until tasks (gsm8k, "
                    "humaneval, ...).")


def main() -> None:
    """lm-eval's command line; importing this module registered the "stdec" model."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
