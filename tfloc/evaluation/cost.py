"""The served model's cost: its parameters and the floating-point operations of one sample."""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

from tfloc.evaluation.base import EvalContext, EvalResult, register_evaluator


def model_flops(model) -> int:
    """Floating-point operations of one sample through ``model`` (TF profiler; a
    multiply-add counts 2)."""
    specs = {k: tf.TensorSpec([1, *v.shape[1:]], v.dtype, name=k) for k, v in
             zip([i.name for i in model.inputs], model.inputs)}
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(specs)
    _, graph_def = convert_variables_to_constants_v2_as_graph(fn)
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        prof = tf.compat.v1.profiler.profile(graph=g, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                             options=opts)
    return int(prof.total_float_ops)


@register_evaluator("cost", outputs=(), run=("model",))
def cost(ctx: EvalContext) -> EvalResult:
    """Parameters and FLOPs per sample of the served model (seed 000 Table I's columns)."""
    if ctx.model is None:
        raise ValueError("evaluator 'cost' needs the served model (EvalContext.model)")
    return EvalResult(report={"cost": {"parameters": int(ctx.model.count_params()),
                                       "flops_per_sample": model_flops(ctx.model)}})
