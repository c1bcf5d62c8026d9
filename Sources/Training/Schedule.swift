// The learning-rate schedule of Llama 2 (§2.2): linear warm-up, then cosine decay to a fraction of the peak.
//
// For optimizer step s (0-based) of `totalSteps`:
//  1. warm-up, s < warmupSteps: peak · (s + 1) / warmupSteps, reaching the peak on the last warm-up step;
//  2. decay, warmupSteps ≤ s < totalSteps − 1: min + ½ (1 + cos(π · progress)) · (peak − min), with
//     progress = (s − warmupSteps) / (totalSteps − 1 − warmupSteps) going from 0 to 1;
//  3. from the last step on, s ≥ totalSteps − 1: min = minRatio · peak, constant.
import Checkpoint
import Configuration
import Foundation

public struct CosineSchedule: Sendable {
    public let peak: Double
    public let warmupSteps: Int
    public let totalSteps: Int
    public let minRatio: Double

    public init(peak: Double, warmupSteps: Int, totalSteps: Int, minRatio: Double) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minRatio = minRatio
    }

    public func learningRate(step s: Int) -> Double {
        let minimum = peak * minRatio
        if s < warmupSteps { return peak * Double(s + 1) / Double(warmupSteps) }
        let last = totalSteps - 1
        if s >= last { return warmupSteps >= last ? peak : minimum }
        let progress = Double(s - warmupSteps) / Double(last - warmupSteps)
        return minimum + 0.5 * (1 + cos(Double.pi * progress)) * (peak - minimum)
    }
}
