"""Writes an ONNX model with one change, for the ONNX frontend's bad-input
tests.

    edit_onnx.py MODEL_DIR OUT.onnx EDIT [ARG]

MODEL_DIR is a generated Hugging Face model; the good graph is written by
moe_ref.onnx_writer (fusion "concat", linear weights [in, out] in
`MatMul(x, W)`, as exporters write them) with its weights in OUT.onnx.data,
then EDIT changes the ModelProto (the data file is left as written, unless
the edit says otherwise):

  none                    the model as written
  fusion F                onnx_writer's fusion F (concat, fc3, interleaved)
  garbage                 bytes that are not a protobuf message
  truncate                the .onnx file cut in half
  location PATH           the first weight's external data location is PATH
  symlink-out             the location is a symbolic link to a file outside
  offset-past-end         the first weight's offset is the data file's size
  length N                the first weight's external data length is N
  inline                  the first norm weight stored inline (raw_data)
  dtype NAME T            initializer NAME's data_type is T (a TensorProto
                          enum name, e.g. INT32)
  dims NAME D0,D1,...     initializer NAME's dims
  ir-version N, opset N   the model's IR version, default-domain opset
  domain D                also import operator set domain D
  extra-node              a Relu of the embedding output (used by nothing)
  op NAME OP              node NAME's op_type is OP
  swap-dims NAME          initializer NAME's two dims swapped (the bytes as
                          they are: a weight stored [out, in] for a MatMul
                          that takes it [in, out])
  head-embedding          the lm_head is MatMul(x, embed_tokens): the table
                          [vocab, hidden] itself, not its transpose
  qmoe-attr F KEY VALUE   the experts as QMoE (onnx_writer --qmoe F,
                          interleaved), the first layer's with integer
                          attribute KEY = VALUE
  qmoe-scale VALUE        the experts as QMoE q8_0 (interleaved), the first
                          scale of the first layer's fc2 (float32) VALUE
  attr NAME KEY VALUE     node NAME's integer attribute KEY is VALUE
  biases F V              onnx_writer's fusion F, every MoE node with its
                          expert biases (fc1's, fc2's, and fc3's with fc3),
                          zeros in the data file, as ONNX Runtime GenAI's
                          builder writes them, but the last value of the
                          first layer's fc2 bias, which is V
  decomposed-norm         the first layer's input norm as torch.onnx.export
                          writes RMSNorm: Pow, ReduceMean, Add, Sqrt,
                          Reciprocal, Mul, Mul

    edit_onnx.py MODEL_DIR OUT.onnx torch GRAPH.onnx EDIT [ARG]

starts instead from GRAPH.onnx, a graph torch.onnx.export wrote for the
generated model (moe_ref.torch_export; its data file is rebuilt beside OUT
from MODEL_DIR and the sidecar GRAPH.json), then EDIT:

  none                    the graph as exported
  swap-inputs NODE        node NODE's first two inputs swapped
  attr NODE KEY VALUE     as above
  split-uneven NODE       Split NODE cuts [I - 1, I + 1] instead of halves
  scale NAME FACTOR       the initializer NAME times FACTOR
  set NAME V0,V1,...      the initializer NAME's values (its dtype kept)
  input NODE I VALUE      node NODE's input I is VALUE
  no-outputs NODE         node NODE's outputs removed (its users read a
                          value nothing produces)
  attr-twice NODE KEY V   node NODE also has a second integer attribute KEY
                          = V, after the one it has (an invalid node:
                          onnxruntime refuses it)
  extra-node              a Relu of the embedding output (used by nothing)
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "python"))
from moe_ref import onnx_writer  # noqa: E402


def main():
    import onnx
    from onnx import TensorProto, helper

    model_dir, out, edit, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    if edit == "torch":
        return edit_torch(model_dir, out, args[0], args[1], args[2:])
    fusion = args[0] if edit in ("fusion", "biases") else "concat"
    qmoe = args[0] if edit == "qmoe-attr" else "q8_0" if edit == "qmoe-scale" else None
    onnx_writer.write_onnx(model_dir, out, "interleaved" if qmoe else fusion, qmoe=qmoe)
    if edit == "qmoe-attr":
        edit, args = "attr", ["/model/layers.0/moe/MoE"] + args[1:]
    if edit in ("none", "fusion"):
        return
    data = out + ".data"
    if edit == "garbage":
        with open(out, "wb") as f:
            f.write(b"\xff\xff\xff\xff not a protobuf message\n")
        return
    if edit == "truncate":
        size = os.path.getsize(out)
        with open(out, "r+b") as f:
            f.truncate(size // 2)
        return
    m = onnx.load(out, load_external_data=False)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    nodes = {n.name: n for n in g.node}
    first = inits["model.embed_tokens.weight"]

    def set_external(t, key, value):
        for kv in t.external_data:
            if kv.key == key:
                kv.value = value
                return
        t.external_data.add(key=key, value=value)

    if edit == "location":
        set_external(first, "location", args[0])
    elif edit == "symlink-out":
        outside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(out))),
                               "outside.data")
        with open(data, "rb") as f, open(outside, "wb") as o:
            o.write(f.read())
        link = os.path.join(os.path.dirname(os.path.abspath(out)), "link.data")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(outside, link)
        set_external(first, "location", "link.data")
    elif edit == "offset-past-end":
        set_external(first, "offset", str(os.path.getsize(data)))
    elif edit == "length":
        set_external(first, "length", args[0])
    elif edit == "inline":
        t = inits["model.layers.0.input_layernorm.weight"]
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
        t.raw_data = np.ones(t.dims[0], np.float32).tobytes()
    elif edit == "dtype":
        inits[args[0]].data_type = getattr(TensorProto, args[1])
    elif edit == "dims":
        del inits[args[0]].dims[:]
        inits[args[0]].dims.extend(int(d) for d in args[1].split(","))
    elif edit == "ir-version":
        m.ir_version = int(args[0])
    elif edit == "opset":
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = int(args[0])
    elif edit == "domain":
        m.opset_import.append(helper.make_opsetid(args[0], 1))
    elif edit == "extra-node":
        g.node.append(helper.make_node("Relu", ["embed/out"], ["dangling"], name="/extra/Relu"))
    elif edit == "op":
        nodes[args[0]].op_type = args[1]
    elif edit == "swap-dims":
        dims = list(inits[args[0]].dims)
        del inits[args[0]].dims[:]
        inits[args[0]].dims.extend(dims[::-1])
    elif edit == "qmoe-scale":
        t = inits["model.layers.0.moe.fc2.scales"]
        at = int(next(kv.value for kv in t.external_data if kv.key == "offset"))
        with open(data, "r+b") as f:
            f.seek(at)
            f.write(np.array([float(args[0])], np.float32).tobytes())
        return
    elif edit == "biases":
        from onnx import numpy_helper
        with open(data, "ab") as f:
            for n in g.node:
                if n.op_type != "MoE":
                    continue
                ins = list(n.input) + [""] * (8 - len(n.input))
                for w, b in ((2, 3), (4, 5), (6, 7)):
                    if not ins[w]:
                        continue
                    dims = list(inits[ins[w]].dims)
                    bias = np.zeros(dims[:2], np.float32)
                    if n.name == "/model/layers.0/moe/MoE" and w == 4:
                        bias.flat[-1] = float(args[1])
                    t = numpy_helper.from_array(bias, ins[w] + ".bias")
                    f.seek(0, 2)
                    at = f.tell()
                    f.write(t.raw_data)
                    t.ClearField("raw_data")
                    t.data_location = TensorProto.EXTERNAL
                    for key, value in (("location", os.path.basename(data)),
                                       ("offset", str(at)), ("length", str(bias.nbytes))):
                        t.external_data.add(key=key, value=value)
                    g.initializer.append(t)
                    ins[b] = t.name
                while not ins[-1]:
                    ins.pop()
                del n.input[:]
                n.input.extend(ins)
    elif edit == "head-embedding":
        nodes["/lm_head/MatMul"].input[1] = "model.embed_tokens.weight"
    elif edit == "attr":
        set_int_attr(nodes[args[0]], args[1], int(args[2]))
    elif edit == "decomposed-norm":
        norm = nodes["/model/layers.0/input_layernorm"]
        x, w, y, t = norm.input[0], norm.input[1], norm.output[0], "/decomposed"
        two = helper.make_tensor(t + "/two", TensorProto.FLOAT, [], [2.0])
        eps = helper.make_tensor(t + "/eps", TensorProto.FLOAT, [], [1e-5])
        axes = helper.make_tensor(t + "/axes", TensorProto.INT64, [1], [-1])
        new = [helper.make_node("Constant", [], [t + "/two"], name=t + "/c2", value=two),
               helper.make_node("Constant", [], [t + "/eps"], name=t + "/ce", value=eps),
               helper.make_node("Constant", [], [t + "/axes"], name=t + "/ca", value=axes),
               helper.make_node("Pow", [x, t + "/two"], [t + "/sq"], name=t + "/Pow"),
               helper.make_node("ReduceMean", [t + "/sq", t + "/axes"], [t + "/mean"],
                                name=t + "/ReduceMean"),
               helper.make_node("Add", [t + "/mean", t + "/eps"], [t + "/var"], name=t + "/Add"),
               helper.make_node("Sqrt", [t + "/var"], [t + "/rms"], name=t + "/Sqrt"),
               helper.make_node("Reciprocal", [t + "/rms"], [t + "/inv"], name=t + "/Reciprocal"),
               helper.make_node("Mul", [x, t + "/inv"], [t + "/scaled"], name=t + "/Mul"),
               helper.make_node("Mul", [w, t + "/scaled"], [y], name=t + "/Mul_1")]
        i = list(g.node).index(norm)
        g.node.remove(norm)
        for k, n in enumerate(new):
            g.node.insert(i + k, n)
    else:
        sys.exit(f"unknown edit {edit!r}")
    onnx.save(m, out)


def edit_torch(model_dir, out, graph, edit, args):
    import onnx
    from onnx import helper, numpy_helper
    from moe_ref import torch_weights

    m = onnx.load(graph, load_external_data=False)
    side = torch_weights.write(os.path.splitext(graph)[0] + ".json", model_dir,
                               os.path.join(os.path.dirname(os.path.abspath(out)),
                                            "torch-data.tmp"))
    os.replace(os.path.join(os.path.dirname(os.path.abspath(out)), "torch-data.tmp"),
               os.path.join(os.path.dirname(os.path.abspath(out)), side["data_file"]))
    g = m.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    if edit == "none":
        pass
    elif edit == "swap-inputs":
        n = nodes[args[0]]
        n.input[0], n.input[1] = n.input[1], n.input[0]
    elif edit == "attr":
        set_int_attr(nodes[args[0]], args[1], int(args[2]))
    elif edit == "no-outputs":
        del nodes[args[0]].output[:]
    elif edit == "attr-twice":
        nodes[args[0]].attribute.append(helper.make_attribute(args[1], int(args[2])))
    elif edit == "split-uneven":
        n = nodes[args[0]]
        half = side_intermediate(side)
        name = args[0] + "/split"
        g.initializer.append(numpy_helper.from_array(
            np.array([half - 1, half + 1], np.int64), name))
        while len(n.input) < 2:
            n.input.append("")
        n.input[1] = name
        for a in list(n.attribute):
            if a.name == "num_outputs":
                n.attribute.remove(a)
    elif edit == "scale":
        t = inits[args[0]]
        a = numpy_helper.to_array(t) * np.float32(float(args[1]))
        t.CopyFrom(numpy_helper.from_array(a.astype(numpy_helper.to_array(t).dtype), t.name))
    elif edit == "set":
        t = inits[args[0]]
        old = numpy_helper.to_array(t)
        a = np.array([float(v) for v in args[1].split(",")]).astype(old.dtype)
        t.CopyFrom(numpy_helper.from_array(a.reshape(old.shape), t.name))
    elif edit == "input":
        nodes[args[0]].input[int(args[1])] = args[2]
    elif edit == "extra-node":
        g.node.append(helper.make_node("Relu", ["embedding"], ["dangling"], name="/extra/Relu"))
    elif edit == "fused-moe":
        fuse_experts(m, int(args[0]) if args else 1)
    else:
        sys.exit(f"unknown torch edit {edit!r}")
    onnx.save(m, out)


def fuse_experts(m, normalize):
    """Replaces each layer's decomposed experts (Softmax, TopK, the repeated
    tokens, GatherND, ..., up to the Reshape [1, -1, H] added to the
    residual) by one com.microsoft.MoE of the norm's output and the router
    logits: fc1 the stacked gate_up_proj (gate rows then up rows,
    swiglu_fusion 2), fc2 the stacked down_proj, k TopK's."""
    from onnx import helper, numpy_helper

    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: t for t in g.initializer}
    drop, new_nodes = set(), []
    for topk in [n for n in g.node if n.op_type == "TopK"]:
        k = int(numpy_helper.to_array(inits[topk.input[1]]).reshape(-1)[0])
        gemm = producer[producer[topk.input[0]].input[0]]
        rows = producer[gemm.input[0]]  # Reshape [-1, H], maybe twice
        while producer[rows.input[0]].op_type == "Reshape":
            rows = producer[rows.input[0]]
        norm_out = rows.input[0]
        # Forward from TopK to the ReduceSum over the k slots, then its
        # Reshape [1, -1, H] and the residual Add.
        frontier, seen, reduce = [topk], set(), None
        while frontier and reduce is None:
            n = frontier.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            for o in n.output:
                for c in consumers.get(o, []):
                    if c.op_type == "ReduceSum" and \
                            any(a.name == "keepdims" and a.i == 0 for a in c.attribute):
                        reduce = c
                    frontier.append(c)
        end = consumers[reduce.output[0]][0]
        add = consumers[end.output[0]][0]
        # Every node from the end back to the router logits and the rows.
        stop = {gemm.output[0], rows.output[0], norm_out} | set(inits)
        stack, region = [end], []
        while stack:
            n = stack.pop()
            if n.name in drop:
                continue
            drop.add(n.name)
            region.append(n)
            stack += [producer[i] for i in n.input
                      if i and i not in stop and i in producer]
        fc = {}
        for gnd in (n for n in region if n.op_type == "GatherND"):
            bmm = consumers[gnd.output[0]][0]
            squeeze = consumers[bmm.output[0]][0]
            split = any(c.op_type == "Split" for c in consumers[squeeze.output[0]])
            fc["fc1" if split else "fc2"] = gnd.input[0]
        if gemm.input[0] != rows.output[0]:  # the router's own Reshape
            drop.add(producer[gemm.input[0]].name)
            gemm.input[0] = rows.output[0]
        out = end.output[0] + "/moe"
        new_nodes.append(helper.make_node(
            "MoE", [norm_out, gemm.output[0], fc["fc1"], "", fc["fc2"]], [out],
            name=end.name + "/MoE", domain="com.microsoft", k=k,
            activation_type="swiglu", swiglu_fusion=2,
            normalize_routing_weights=normalize))
        add.input[list(add.input).index(end.output[0])] = out
    kept = [n for n in g.node if n.name not in drop]
    del g.node[:]
    g.node.extend(kept + new_nodes)
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def set_int_attr(node, name, value):
    """Sets (or adds) the integer attribute `name` of `node`."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def side_intermediate(side):
    for w in side["weights"]:
        if w["kind"] == "stack_down":
            return w["shape"][2]
    sys.exit("the sidecar has no stacked down weight")


if __name__ == "__main__":
    main()
