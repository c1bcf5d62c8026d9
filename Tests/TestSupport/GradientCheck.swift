// Finite-difference checking for float32 kernels.
//
// The scalar probed is L = Σ w · output with fixed random weights w, so the analytic gradient is the kernel's
// backward fed dout = w. Central differences with a step of 1e-2 in float32 carry about 1e-5 of round-off
// relative to L; the tolerance |fd − analytic| ≤ 1e-2 · (|analytic| + max|analytic|/10) is what an honest float32
// kernel meets and what a wrong term (a missing factor, a transposed index) does not. A NaN or Inf anywhere
// fails the check.
import Support
import Testing

/// Test data from the project's own seeded generator (SplitMix64), as floats in a range.
public struct Rand {
    private var generator: SplitMix64
    public init(_ seed: UInt64) { generator = SplitMix64(seed: seed) }
    public mutating func next() -> UInt64 { generator.next() }
    /// Uniform in [-scale, scale).
    public mutating func float(_ scale: Float = 1) -> Float { (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
    public mutating func floats(_ n: Int, _ scale: Float = 1) -> [Float] { (0..<n).map { _ in float(scale) } }
}

public func weightedSum(_ values: [Float], _ weights: [Float]) -> Double {
    zip(values, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
}

/// Checks `analytic` (∂L/∂x) against central differences of `loss` at `x`, on every coordinate.
public func expectGradient(
    _ name: String, at x: [Float], analytic: [Float], step: Float = 1e-2,
    sourceLocation: SourceLocation = #_sourceLocation, loss: ([Float]) -> Double
) {
    #expect(x.count == analytic.count, "\(name): gradient has \(analytic.count) values for \(x.count) inputs")
    let scale = analytic.map { abs($0) }.max() ?? 0
    var worst = (index: -1, fd: 0.0, analytic: Float(0), excess: 0.0)
    for i in 0..<x.count {
        var plus = x, minus = x
        plus[i] += step
        minus[i] -= step
        let fd = (loss(plus) - loss(minus)) / Double(2 * step)
        let allowed = 1e-2 * (Double(abs(analytic[i])) + Double(scale) / 10) + 1e-6
        // A NaN or Inf on either side fails: every comparison with NaN is false, so it must be asked for.
        let excess = fd.isFinite && analytic[i].isFinite ? abs(fd - Double(analytic[i])) - allowed : .infinity
        if excess > worst.excess { worst = (i, fd, analytic[i], excess) }
    }
    #expect(
        worst.index < 0,
        "\(name): finite difference \(worst.fd) vs analytic \(worst.analytic) at index \(worst.index)",
        sourceLocation: sourceLocation)
}

/// `expectGradient` on up to `probes` coordinates spread over one tensor: `values` is the tensor's live
/// parameters (set to each probe's ± step and restored), `gradient` its analytic gradient, `loss` the model's
/// loss at the parameters as they stand.
public func expectTensorGradient(
    _ name: String, values: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
    probes count: Int, sourceLocation: SourceLocation = #_sourceLocation, loss: () -> Double
) {
    let original = Array(values), analytic = Array(gradient)
    let probes = Array(stride(from: 0, to: values.count, by: max(1, values.count / count)))
    expectGradient(
        name, at: probes.map { original[$0] }, analytic: probes.map { analytic[$0] }, sourceLocation: sourceLocation
    ) { probed in
        for (i, v) in zip(probes, probed) { values[i] = v }
        defer { for i in probes { values[i] = original[i] } }
        return loss()
    }
}

/// Largest |a − b| over two arrays; infinity when their lengths differ or either holds a NaN or Inf where
/// the other does not hold the same value (Swift's max would otherwise drop a NaN silently, and zip would
/// cut the longer array short). Every test that compares arrays of numbers goes through this.
public func maxDifference<T: BinaryFloatingPoint>(_ a: [T], _ b: [T]) -> T {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).reduce(0) { worst, pair in
        guard pair.0.isFinite && pair.1.isFinite else { return pair.0 == pair.1 ? worst : .infinity }
        return max(worst, abs(pair.0 - pair.1))
    }
}
