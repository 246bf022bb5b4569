"""DecodeConfig: every decoding option in one validated dataclass."""

from dataclasses import dataclass, field, fields

from stdec.errors import StdecError

__all__ = ["CACHE_MODES", "POLICY_NAMES", "DecodeConfig"]

# the names of policies.POLICIES, written out so that validating options (and `stdec --help`)
# needs no torch; tests/test_cli.py checks that the two agree
POLICY_NAMES = ("fixed", "threshold", "factor", "localleap", "stdec", "eb", "klass", "wino",
                "credit")
CACHE_MODES = ("none", "prefix", "dual", "dkv")


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode. Options that belong to one policy are ignored by the others."""

    policy: str = _opt("stdec", f"commit rule, one of {', '.join(POLICY_NAMES)}")
    cache: str = _opt("none", f"KV cache mode, one of {', '.join(CACHE_MODES)}")
    gen_length: int = _opt(128, "number of tokens to generate (masks appended to the prompt)")
    block_length: int = _opt(32, "semi-autoregressive block size; must divide gen_length")
    stop_at_eos: bool = _opt(
        True, "finish a row once it has committed EOS with everything before it decoded"
    )
    temperature: float = _opt(0.0, "0 is greedy; > 0 samples with Gumbel-max noise in float64")
    seed: int = _opt(0, "seed of the sampling noise (used only when temperature > 0)")
    trace: bool = _opt(False, "record the step at which each position was committed")
    # dkv (dKV-Cache, Ma et al. 2025): its public generate()'s cache_reloading_step
    dkv_interval: int = _opt(
        4, "dkv: a full forward refreshes every K/V every dkv_interval steps of a block")
    # fixed (LLaDA)
    steps: int | None = _opt(
        None, "fixed: total steps over gen_length, split evenly over blocks (default gen_length)"
    )
    # threshold (Fast-dLLM)
    tau: float = _opt(0.9, "threshold: commit every masked position with confidence >= tau")
    # factor (Fast-dLLM)
    factor: float = _opt(1.0, "factor: commit the n-th most confident while c >= 1 - f/(n+1)")
    # localleap
    leap_tau_hi: float = _opt(0.9, "localleap: confidence that makes a position an anchor")
    leap_tau_lo: float = _opt(0.75, "localleap: confidence needed next to an anchor")
    leap_radius: int = _opt(4, "localleap: how far from an anchor the lower threshold applies")
    # stdec: model-neutral defaults, the real models' setting (tau_high = the global threshold
    # 0.9; models/presets.py says why). A checkpoint carries its own: the testbed's tuned
    # setting is in assets/testbed/decoding_defaults.json (decoding/defaults.py)
    tau_high: float = _opt(0.9, "stdec: threshold deep inside masked regions")
    tau_low: float = _opt(0.75, "stdec: threshold next to decoded tokens (= tau_high: no spatial)")
    sigma: float = _opt(2.0, "stdec: width in tokens of the Gaussian that smooths the thresholds")
    rho: float = _opt(0.9, "stdec: relax factor for temporally stable predictions (1: off)")
    window: int = _opt(2, "stdec: steps a prediction must stay the same to be relaxed")
    # eb (EB-sampler, Ben-Hamu et al. 2025): gamma as diffusers' EntropyBoundScheduler ships it
    eb_gamma: float = _opt(
        0.1, "eb: entropy budget (nats): commit the lowest-entropy positions while their "
        "summed entropy less the largest stays <= eb_gamma")
    # klass (Kim et al. 2025): the public code's defaults (conf 0.9, KL 0.01, history 2)
    klass_tau: float = _opt(0.9, "klass: confidence a position must exceed")
    klass_kl: float = _opt(
        0.01, "klass: KL divergence between successive steps' distributions must stay below it")
    klass_steps: int = _opt(2, "klass: consecutive steps the KL must stay below klass_kl")
    # wino (Hong et al. 2025): the public code's wide-in 0.6, narrow-out 0.9
    wino_draft: float = _opt(0.6, "wino: draft every masked position above this confidence")
    wino_verify: float = _opt(
        0.9, "wino: mask a drafted token again when its probability falls below this")
    # credit (CreditDecoding, Wang et al. 2025): dInfer/SGLang's threshold 0.95, decay 0.65,
    # fusion 0.7, exponent 0.5
    credit_tau: float = _opt(0.95, "credit: commit when the credit-fused confidence reaches it")
    credit_decay: float = _opt(0.65, "credit: factor a position's credit decays by each step")
    credit_lambda: float = _opt(0.7, "credit: weight of log(1 + credit) added to the logit")
    credit_alpha: float = _opt(0.5, "credit: a step adds confidence ** credit_alpha to the credit")

    def __post_init__(self):
        _one_of("policy", self.policy, POLICY_NAMES)
        _one_of("cache", self.cache, CACHE_MODES)
        _positive_int("gen_length", self.gen_length)
        _positive_int("block_length", self.block_length)
        if self.gen_length % self.block_length:
            raise StdecError(
                f"gen_length ({self.gen_length}) must be a multiple of block_length "
                f"({self.block_length}); pick block_length among its divisors."
            )
        if self.temperature < 0:
            raise StdecError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.steps is not None:
            _positive_int("steps", self.steps)
            blocks = self.num_blocks
            if self.steps % blocks or not 1 <= self.steps // blocks <= self.block_length:
                raise StdecError(
                    f"steps ({self.steps}) must be a multiple of the number of blocks ({blocks}) "
                    f"between {blocks} and gen_length ({self.gen_length})."
                )
        for name in ("tau", "leap_tau_hi", "leap_tau_lo", "tau_high", "tau_low", "rho",
                     "klass_tau", "wino_draft", "wino_verify", "credit_tau", "credit_decay"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise StdecError(f"{name} must be in (0, 1], got {value}.")
        if self.tau_low > self.tau_high:
            raise StdecError(
                f"tau_low ({self.tau_low}) must not exceed tau_high ({self.tau_high}): "
                "positions next to decoded tokens get the lower threshold."
            )
        if self.leap_tau_lo > self.leap_tau_hi:
            raise StdecError(
                f"leap_tau_lo ({self.leap_tau_lo}) must not exceed "
                f"leap_tau_hi ({self.leap_tau_hi})."
            )
        if not self.factor > 0:
            raise StdecError(f"factor must be > 0, got {self.factor}.")
        if not self.sigma > 0:
            raise StdecError(f"sigma must be > 0 tokens, got {self.sigma}.")
        _positive_int("window", self.window)
        _positive_int("klass_steps", self.klass_steps)
        _positive_int("dkv_interval", self.dkv_interval)
        for name in ("eb_gamma", "klass_kl", "credit_alpha"):
            if not getattr(self, name) > 0:
                raise StdecError(f"{name} must be > 0, got {getattr(self, name)}.")
        if not self.credit_lambda >= 0:
            raise StdecError(f"credit_lambda must be >= 0 (0: no credit), got "
                             f"{self.credit_lambda}.")
        if self.wino_draft > self.wino_verify:
            raise StdecError(f"wino_draft ({self.wino_draft}) must not exceed wino_verify "
                             f"({self.wino_verify}): drafts are verified at the higher threshold.")
        if not isinstance(self.leap_radius, int) or self.leap_radius < 0:
            raise StdecError(f"leap_radius must be an integer >= 0, got {self.leap_radius!r}.")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        """fixed: steps spent on each block."""
        return (self.steps or self.gen_length) // self.num_blocks

    @classmethod
    def option_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _one_of(name: str, value, choices: tuple[str, ...]):
    if value not in choices:
        raise StdecError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}.")


def _positive_int(name: str, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StdecError(f"{name} must be a positive integer, got {value!r}.")
