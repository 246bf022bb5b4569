"""chat=True feeds the model the prompt wrapped exactly as LLaDA's chat template says:
checked on the ids the model's first forward receives, against the template written out."""

import pytest
import torch

import stdec


class Recorder(torch.nn.Module):
    """The model, with the input ids of every forward kept."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.fed = inner, []
        self.config = inner.config
        # the model interface's traits: the inner model's
        self.logits_shift, self.prefix_lm = inner.logits_shift, inner.prefix_lm
        self.greedy_first_token = inner.greedy_first_token
        self.system_prompt, self.cuda_graphs = inner.system_prompt, inner.cuda_graphs

    device = property(lambda self: self.inner.device)
    dtype = property(lambda self: self.inner.dtype)

    def new_cache(self, *a, **k):
        return self.inner.new_cache(*a, **k)

    def forward(self, ids, **kw):
        self.fed.append(ids.clone())
        return self.inner(ids, **kw)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return stdec.load(checkpoint)


def seen_by_model(model, tok, prompts, chat, gen=8):
    """The rows of the model's first forward, each cut to its prompt: the prompt comes first
    in its row, then gen masks (rows of a batch may be padded after that)."""
    rec = Recorder(model)
    stdec.generate(rec, tok, prompts, gen_length=gen, block_length=gen, chat=chat)
    rows = []
    for row in rec.fed[0].tolist():
        # the prompt ends where the run of gen masks starts (prompts hold no mask id)
        P = row.index(tok.mask_token_id)
        assert row[P : P + gen] == [tok.mask_token_id] * gen
        rows.append(row[:P])
    return rows


def templated(tok, prompt):
    # LLaDA-8B-Instruct's template, written out: BOS, the user turn closed by <|eot_id|>,
    # then the assistant header the answer follows
    text = ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n" + prompt +
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    return text, tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("prompt", ["hello", "Sort the list [3, 1, 2]."])
def test_chat_wraps_the_prompt_as_the_template_says(loaded, prompt):
    model, tok = loaded
    text, want = templated(tok, prompt)
    special = {t: tok.convert_tokens_to_ids(t) for t in
               ("<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}
    # each special token is one id, where the template puts it
    assert want[0] == special["<|startoftext|>"]
    assert want.count(special["<|eot_id|>"]) == 1
    assert want.count(special["<|start_header_id|>"]) == want.count(
        special["<|end_header_id|>"]) == 2
    assert tok.decode(want) == text
    assert seen_by_model(model, tok, [prompt], chat=True) == [want]
    assert seen_by_model(model, tok, [prompt], chat=False) == [tok(prompt)["input_ids"]]


def test_chat_rows_of_a_batch_are_each_wrapped(loaded):
    model, tok = loaded
    prompts = ["hi", "Sort the list [3, 1, 2].", "hello"]
    want = [templated(tok, p)[1] for p in prompts]
    assert seen_by_model(model, tok, prompts, chat=True) == want
