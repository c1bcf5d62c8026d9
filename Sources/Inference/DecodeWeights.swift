// DecodeWeights: the matrices decoding reads, packed once for that read, in fp32 or bf16.
//
// Batch-1 decoding reads every weight once per token, so its speed is the memory bandwidth over the weights'
// bytes. Packed into panels of 64 output channels (lm_pack_panels), one token's pass over a matrix is a single
// sequential stream and a block of rows shares every vector it loads; in bf16 the stream is half as long, each
// weight widened exactly to fp32 in registers, so the sums and activations stay fp32. The model's own parameters
// stay as they are for prefill (sgemm) and for training; `repack()` follows them after an update.
// What this is not: a quantiser (bf16 is the rounding of the fp32 weights, nothing calibrated).
import Dispatch
import Kernels
import Model

/// How decoding holds its matrices: fp32 (the same weights as training) or bf16 (half the bytes to read).
public enum DecodePrecision: String, CaseIterable, Sendable {
    case fp32, bf16

    public var bytesPerValue: Int { self == .fp32 ? 4 : 2 }
}

public final class DecodeWeights {
    public let precision: DecodePrecision
    /// Holds one layer's matrices (and lm_head), packed again from each unit as a sharded forward gathers it,
    /// instead of every layer's packed once.
    public let streaming: Bool
    /// Bytes of the packed matrices.
    public let byteCount: Int
    private let memory: UnsafeMutableRawPointer
    /// Where each matrix's panels start, in values: per layer held in LayerTensor order (the 7 matrices), then
    /// lm_head.
    private var offsets: [Int] = []
    private let packed: [(outputs: Int, inputs: Int)]
    private let model: LlamaModel

    static let matrices: [LayerTensor] = [.q, .k, .v, .o, .gate, .up, .down]

    /// Values of every packed matrix of config `c` (the padding of each last panel included).
    public static func values(_ c: LlamaConfig, streaming: Bool = false) -> Int {
        shapes(c, layers: streaming ? 1 : c.nLayers).reduce(0) {
            $0 + lm_panels_values(Int32($1.inputs), Int32($1.outputs))
        }
    }

    public static func bytes(_ c: LlamaConfig, precision: DecodePrecision, streaming: Bool = false) -> Int {
        values(c, streaming: streaming) * precision.bytesPerValue
    }

    /// (outputs, inputs) of each matrix in packing order, for `layers` layers.
    private static func shapes(_ c: LlamaConfig, layers: Int) -> [(outputs: Int, inputs: Int)] {
        let layer: [(Int, Int)] = [
            (c.qDim, c.dim), (c.kvDim, c.dim), (c.kvDim, c.dim), (c.dim, c.qDim), (c.ffnHiddenSize, c.dim),
            (c.ffnHiddenSize, c.dim), (c.dim, c.ffnHiddenSize),
        ]
        return Array([[(Int, Int)]](repeating: layer, count: layers).joined()) + [(c.vocabSize, c.dim)]
    }

    /// Packs the model's parameters now, unless `streaming` (then each forward packs what it gathers).
    public init(model: LlamaModel, precision: DecodePrecision, threads: Int = 1, streaming: Bool = false) {
        self.model = model
        self.precision = precision
        self.streaming = streaming
        packed = Self.shapes(model.config, layers: streaming ? 1 : model.config.nLayers)
        var offset = 0
        for shape in packed {
            offsets.append(offset)
            offset += lm_panels_values(Int32(shape.inputs), Int32(shape.outputs))
        }
        byteCount = offset * precision.bytesPerValue
        memory = .allocate(byteCount: max(byteCount, 64), alignment: 64)
        if !streaming { repack(threads: threads) }
    }

    deinit { memory.deallocate() }

    /// Packs the model's current parameters again (after a training step changed them).
    public func repack(threads: Int = 1) {
        precondition(!streaming, "streaming decode weights are packed a unit at a time")
        let p = UnsafePointer(model.parameters.pointer)
        for l in 0..<model.config.nLayers { pack(layer: l, base: p, threads: threads) }
        packHead(base: p, threads: threads)
    }

    /// Layer l's matrices from `base` (base + layout offset addresses each) into their panels (streaming: the
    /// one layer's).
    public func pack(layer l: Int, base: UnsafePointer<Float>, threads: Int = 1) {
        let slot = streaming ? 0 : l
        for (i, tensor) in Self.matrices.enumerated() {
            pack(matrix: slot * Self.matrices.count + i, from: base + model.layout.layer(l, tensor).offset, threads)
        }
    }

    /// lm_head from `base` into its panels.
    public func packHead(base: UnsafePointer<Float>, threads: Int = 1) {
        pack(matrix: offsets.count - 1, from: base + model.layout.head(.lm)!.offset, threads)
    }

    private func pack(matrix i: Int, from source: UnsafePointer<Float>, _ threads: Int) {
        let shape = packed[i]
        let (inputs, outputs) = (Int32(shape.inputs), Int32(shape.outputs))
        let panels = (shape.outputs + 63) / 64
        let (f32, bf16) = (fp32Pointer + offsets[i], bf16Pointer + offsets[i])
        let precision = precision
        let work = UnsafeSendableWork { first, end in
            switch precision {
            case .fp32: lm_pack_panels(f32, source, inputs, outputs, Int32(first), Int32(end))
            case .bf16: lm_pack_panels_bf16(bf16, source, inputs, outputs, Int32(first), Int32(end))
            }
        }
        let workers = max(1, min(threads, panels))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            work.body(panels * w / workers, panels * (w + 1) / workers)
        }
    }

    private var fp32Pointer: UnsafeMutablePointer<Float> { memory.assumingMemoryBound(to: Float.self) }
    private var bf16Pointer: UnsafeMutablePointer<UInt16> { memory.assumingMemoryBound(to: UInt16.self) }

    /// out (n, outputs) (+)= inp (n, inputs) · matrixᵀ for the output channels of panels [first, end).
    func matmul(
        _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, layer: Int?, _ tensor: LayerTensor?,
        rows n: Int, inputs: Int, outputs: Int, panels first: Int, _ end: Int, accumulate: Bool
    ) {
        let index =
            layer.map { (streaming ? 0 : $0) * Self.matrices.count + Self.matrices.firstIndex(of: tensor!)! }
            ?? offsets.count - 1
        let (c, oc, acc) = (Int32(inputs), Int32(outputs), Int32(accumulate ? 1 : 0))
        switch precision {
        case .fp32:
            lm_matmul_panels(out, inp, fp32Pointer + offsets[index], Int32(n), c, oc, Int32(first), Int32(end), acc)
        case .bf16:
            lm_matmul_panels_bf16(
                out, inp, bf16Pointer + offsets[index], Int32(n), c, oc, Int32(first), Int32(end), acc)
        }
    }
}

private struct UnsafeSendableWork: @unchecked Sendable {
    let body: (Int, Int) -> Void
}
