// FloatBuffer: one owned, 64-byte-aligned allocation of float32, the unit of llm.c-style memory.
//
// Parameters, gradients, each AdamW moment and the activation arena are one FloatBuffer each; tensors are
// offsets into them. Unsafe access is funnelled through `pointer`, with bounds checked in debug builds.
import Foundation

public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must be non-negative")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: max(count, 1) * MemoryLayout<Float>.stride,
            alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    public var byteCount: Int { count * MemoryLayout<Float>.stride }

    public func zero() { pointer.update(repeating: 0, count: count) }

    /// The `length` floats from `offset`.
    public func slice(_ offset: Int, _ length: Int) -> UnsafeMutableBufferPointer<Float> {
        assert(offset >= 0 && length >= 0 && offset + length <= count, "slice \(offset)+\(length) of \(count)")
        return UnsafeMutableBufferPointer(start: pointer + offset, count: length)
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    public subscript(index: Int) -> Float {
        get {
            assert(index >= 0 && index < count)
            return pointer[index]
        }
        set {
            assert(index >= 0 && index < count)
            pointer[index] = newValue
        }
    }
}
