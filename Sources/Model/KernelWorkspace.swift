// The memory the C kernels work in, owned here: the kernels allocate nothing and return a status code, and
// a bad status becomes a thrown KernelError that names the kernel, the shape and what to do.
//  - OneDNNMatmuls: a model's cache of oneDNN bf16 primitives (with its engine and stream) and the user
//    scratchpad they run in; one per model, so models in one process share nothing.
//  - AlignedScratch: growable 64-byte aligned bytes: the bf16 attention tiles' packed operands (one slice per
//    thread), oneDNN's scratchpad, and the bf16 roundings of a matmul's inputs.
// What this is not: the arena of activations (ActivationArena), which is planned per batch shape.
import Kernels

public struct KernelError: Error, CustomStringConvertible, Equatable {
    public let kernel: String
    public let status: Int32
    public let detail: String

    public var description: String {
        let reason: String
        switch Int(status) {
        case Int(LM_ERROR_ONEDNN):
            reason = "oneDNN failed (out of memory, or a CPU without bf16); run with --precision fp32"
        case Int(LM_ERROR_SCRATCH):
            reason = "its scratch was too small (a bug in the caller's sizing; please report it)"
        case Int(LM_ERROR_UNSUPPORTED): reason = "this build or CPU has no AVX-512 BF16; run with --precision fp32"
        default: reason = "status \(status)"
        }
        return "\(kernel) \(detail): \(reason)"
    }

    /// Throws unless `status` is LM_OK.
    static func check(_ status: Int32, _ kernel: String, _ detail: @autoclosure () -> String) throws {
        if status != Int32(LM_OK) { throw KernelError(kernel: kernel, status: status, detail: detail()) }
    }
}

/// Growable bytes, 64-byte aligned (contents undefined after growing).
public final class AlignedScratch {
    private var pointer: UnsafeMutableRawPointer?
    public private(set) var byteCount = 0

    public init() {}

    /// At least `bytes` bytes.
    public func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        if let pointer, byteCount >= bytes { return pointer }
        pointer?.deallocate()
        byteCount = max(bytes, 64)
        pointer = .allocate(byteCount: byteCount, alignment: 64)
        return pointer!
    }

    deinit { pointer?.deallocate() }
}

/// oneDNN's bf16 matmul primitives for one model, cached by shape (a model uses a few dozen; a full cache
/// replaces its entries in turn), with the scratchpad they run in.
public final class OneDNNMatmuls {
    /// Shapes kept: a training step uses about 20 (each weight's three products, the head's, rounding widths).
    public static let capacity: Int32 = 64
    private let cache: UnsafeMutableRawPointer
    private let scratchpad = AlignedScratch()

    public init() throws {
        cache = .allocate(byteCount: lm_bf16_matmuls_bytes(Self.capacity), alignment: 64)
        let status = lm_bf16_matmuls_init(OpaquePointer(cache), Self.capacity)
        guard status == Int32(LM_OK) else {
            lm_bf16_matmuls_release(OpaquePointer(cache))
            cache.deallocate()
            throw KernelError(kernel: "lm_bf16_matmuls_init", status: status, detail: "(engine and stream)")
        }
    }

    deinit {
        lm_bf16_matmuls_release(OpaquePointer(cache))
        cache.deallocate()
    }

    /// c (m,n) = a (m,k) · b (k,n) [+ c] on bf16 inputs; a stored (k,m) when transA, b (n,k) when transB.
    public func multiply(
        _ c: UnsafeMutablePointer<Float>, _ a: UnsafePointer<UInt16>, _ b: UnsafePointer<UInt16>,
        m: Int, n: Int, k: Int, transA: Bool, transB: Bool, accumulate: Bool
    ) throws {
        var needed = 0
        for _ in 0..<2 {  // the first call of a shape may learn that its scratchpad must grow
            let status = lm_matmul_bf16(
                OpaquePointer(cache), c, a, b, Int64(m), Int64(n), Int64(k), transA ? 1 : 0, transB ? 1 : 0,
                accumulate ? 1 : 0, scratchpad.reserve(needed), scratchpad.byteCount, &needed)
            if status == Int32(LM_ERROR_SCRATCH) { continue }
            return try KernelError.check(status, "lm_matmul_bf16", "(\(m)×\(k)) · (\(k)×\(n))")
        }
        throw KernelError(
            kernel: "lm_matmul_bf16", status: Int32(LM_ERROR_SCRATCH), detail: "(\(m)×\(k)) · (\(k)×\(n))")
    }
}
