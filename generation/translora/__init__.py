"""Trans-LoRA (arXiv 2405.17258; shared/ALGORITHMS.md section 6): move a LoRA to another base
model with synthetic task inputs from a generator LLM, filtered by a discriminator and labelled by
the source model + adapter (the teacher), then distilled into a new LoRA on the target base.

Modules, in pipeline order: ``params`` (the recipe, torch-free), ``synthesis`` (numbered-list
prompt, sampler, parser), ``discriminator`` (data, training, p(yes)/p(no) judge), ``filtering``
(rejection sampling with a cap), ``distill`` (teacher labels, student task), ``pipeline``.
"""
