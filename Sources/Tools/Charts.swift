// SVG charts of a run's JSON Lines metrics: the loss (left axis) and the learning rate (right axis) by step.
// Plain SVG text, no dependencies; a browser or the file viewer shows it.

import Configuration
import Foundation
import Support
import Training

public enum LossChart {
    public static func svg(metricsPath: String, title: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: metricsPath) else {
            throw TrainingError("\(metricsPath): cannot read the metrics file")
        }
        var steps: [Double] = [], losses: [Double] = [], lrs: [Double] = [], validation: [(Double, Double)] = []
        for line in JSONLines.lines(data, source: metricsPath) {
            guard let o = line.object,
                let step = o["step"] as? Double, let loss = o["loss"] as? Double, let lr = o["lr"] as? Double
            else {
                // `problem` says why a line is not JSON; a JSON line without the fields is named as such.
                throw TrainingError(
                    "\(metricsPath):\(line.number): \(line.problem ?? "not a metrics line with step, loss and lr")")
            }
            if loss.isFinite {
                steps.append(step)
                losses.append(loss)
                lrs.append(lr)
            }
            if let v = o["val_loss"] as? Double, v.isFinite { validation.append((step, v)) }
        }
        guard !steps.isEmpty else { throw TrainingError("\(metricsPath): no steps to plot") }
        return render(title: title, steps: steps, losses: losses, lrs: lrs, validation: validation)
    }

    /// `validation`: (step, loss) of the validation loss, drawn on the loss axis as points joined by a line.
    static func render(
        title: String, steps: [Double], losses: [Double], lrs: [Double], validation: [(Double, Double)] = []
    ) -> String {
        let (w, h, left, right, top, bottom) = (760.0, 420.0, 70.0, 80.0, 40.0, 50.0)
        let (x0, x1) = (steps.min()!, max(steps.max()!, steps.min()! + 1))
        // The loss axis spans whole ticks, so its first and last labels sit on the frame.
        let all = losses + validation.map(\.1)
        let lossTicks = niceTicks(all.min()!, max(all.max()!, all.min()! + 1e-6))
        let (l0, l1) = (lossTicks.first!, lossTicks.last!)
        let r1 = max(lrs.max()!, 1e-12)
        func x(_ s: Double) -> Double { left + (s - x0) / (x1 - x0) * (w - left - right) }
        func yl(_ v: Double) -> Double { top + (l1 - v) / (l1 - l0) * (h - top - bottom) }
        func yr(_ v: Double) -> Double { top + (r1 - v) / r1 * (h - top - bottom) }
        func path(_ ys: [Double], _ f: (Double) -> Double) -> String {
            zip(steps, ys).enumerated().map {
                String(format: "%@%.1f,%.1f", $0.offset == 0 ? "M" : "L", x($0.element.0), f($0.element.1))
            }
            .joined(separator: " ")
        }
        var svg = svgOpening(width: w, height: h, title: title)
        // Round ticks (1, 2 or 5 times a power of ten) that cover the data, as a person would draw the axes.
        for v in lossTicks {
            let y = yl(v)
            svg += String(
                format: "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", left, w - right, y, y
            )
            svg += String(
                format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#1f77b4\">%@</text>\n", left - 6, y + 4,
                tickLabel(v))
        }
        for v in niceTicks(0, r1) where v <= r1 * (1 + 1e-9) {
            svg += String(
                format: "<text x=\"%.0f\" y=\"%.1f\" fill=\"#ff7f0e\">%@</text>\n", w - right + 6, yr(v) + 4,
                tickLabel(v))
        }
        for s in niceTicks(x0, x1) {
            svg += String(
                format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%@</text>\n", x(s), h - bottom + 18,
                tickLabel(s))
        }
        svg += """
            <path d="\(path(losses, yl))" fill="none" stroke="#1f77b4" stroke-width="1.8"/>
            <path d="\(path(lrs, yr))" fill="none" stroke="#ff7f0e" stroke-width="1.2" stroke-dasharray="5,3"/>
            \(validationMarks(validation, x: x, y: yl))<text x="\(w / 2)" y="\(h - 12)" text-anchor="middle">step</text>
            <text x="18" y="\(h / 2)" transform="rotate(-90 18 \(h / 2))" text-anchor="middle" fill="#1f77b4">loss</text>
            <text x="\(w - 14)" y="\(h / 2)" transform="rotate(90 \(w - 14) \(h / 2))" text-anchor="middle" fill="#ff7f0e">learning rate</text>
            </svg>

            """
        return svg
    }

    /// The validation loss as a green line through its points, with a legend entry; nothing without points.
    static func validationMarks(
        _ points: [(Double, Double)], x: (Double) -> Double, y: (Double) -> Double
    ) -> String {
        guard !points.isEmpty else { return "" }
        let path = points.enumerated().map {
            String(format: "%@%.1f,%.1f", $0.offset == 0 ? "M" : "L", x($0.element.0), y($0.element.1))
        }.joined(separator: " ")
        var out = "<path d=\"\(path)\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1.5\"/>\n"
        for (s, v) in points {
            out += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#2ca02c\"/>\n", x(s), y(v))
        }
        return out + "<text x=\"80\" y=\"30\" fill=\"#2ca02c\">● validation loss</text>\n"
    }
}

/// An SVG document's opening: its size, a white background and the title, escaped.
func svgOpening(width w: Double, height h: Double, title: String) -> String {
    """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(w / 2)" y="22" text-anchor="middle" font-size="15">\(title.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;"))</text>

    """
}

/// About five round values (1, 2 or 5 × 10^k apart) from at or below `low` to at or above `high`.
func niceTicks(_ low: Double, _ high: Double, count: Int = 5) -> [Double] {
    let span = max(high - low, abs(high) * 1e-9, 1e-12)
    let raw = span / Double(count)
    let magnitude = pow(10, floor(log10(raw)))
    let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
    let first = floor(low / step) * step, last = ceil(high / step) * step
    return stride(from: first, through: last + step / 2, by: step).map { ($0 / step).rounded() * step }
}

/// A tick value without float noise: 0.0003 not 3.0000000000000003e-04, 2000 not 2000.000; exponents below 1e-4.
func tickLabel(_ v: Double) -> String {
    if v == 0 { return "0" }
    if abs(v) >= 1e-4 && abs(v) < 1e6 {
        var text = String(format: "%.6f", v)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
    return String(format: "%.0e", v)
}

/// The density of reward scores of chosen and rejected responses (Llama 2's Figure 27 view): a Gaussian kernel
/// density estimate of each set (Silverman's bandwidth) over a shared axis, two curves.
public enum ScoreDensityChart {
    public static func svg(series: [(name: String, scores: [Double])], title: String) -> String {
        let all = series.flatMap(\.scores)
        guard let lo = all.min(), let hi = all.max() else { return "" }
        let pad = max(0.5, 0.1 * (hi - lo))
        let ticks = niceTicks(lo - pad, hi + pad)
        let (x0, x1) = (ticks.first!, ticks.last!)
        let grid = (0...200).map { x0 + (x1 - x0) * Double($0) / 200 }
        func density(_ xs: [Double]) -> [Double] {
            guard xs.count > 1 else { return grid.map { _ in 0 } }
            let mean = xs.reduce(0, +) / Double(xs.count)
            let sd = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count - 1)).squareRoot()
            let h = max(1.06 * sd * pow(Double(xs.count), -0.2), 1e-3)
            return grid.map { g in
                xs.reduce(0) { $0 + exp(-0.5 * pow((g - $1) / h, 2)) }
                    / (Double(xs.count) * h * (2 * Double.pi).squareRoot())
            }
        }
        let curves = series.map { density($0.scores) }
        let top = max(curves.flatMap { $0 }.max() ?? 1, 1e-9)
        let (w, h, left, right, topPad, bottom) = (760.0, 420.0, 70.0, 30.0, 40.0, 50.0)
        func x(_ v: Double) -> Double { left + (v - x0) / (x1 - x0) * (w - left - right) }
        func y(_ v: Double) -> Double { topPad + (1 - v / top) * (h - topPad - bottom) }
        let colors = ["#2ca02c", "#d62728", "#1f77b4", "#ff7f0e"]
        var svg = svgOpening(width: w, height: h, title: title)
        for v in ticks {
            svg += String(
                format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#eee\"/>", x(v), x(v), topPad,
                h - bottom)
            svg += String(
                format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%@</text>\n", x(v), h - bottom + 18,
                tickLabel(v))
        }
        for (i, (s, curve)) in zip(series, curves).enumerated() {
            let path = zip(grid, curve).enumerated().map {
                String(format: "%@%.1f,%.1f", $0.offset == 0 ? "M" : "L", x($0.element.0), y($0.element.1))
            }
            .joined(separator: " ")
            let color = colors[i % colors.count]
            svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            svg += String(
                format: "<text x=\"%.0f\" y=\"%.0f\" fill=\"%@\">%@ (%d)</text>\n", w - right - 150,
                topPad + 18 * Double(i + 1), color,
                s.name, s.scores.count)
        }
        svg += """
            <text x="\(w / 2)" y="\(h - 12)" text-anchor="middle">reward score</text>
            <text x="18" y="\(h / 2)" transform="rotate(-90 18 \(h / 2))" text-anchor="middle">density</text>
            </svg>

            """
        return svg
    }
}

/// Rejection sampling's report (Llama 2 Figure 7): the mean over prompts of the best reward among the first N
/// samples, for N = 1…K, as points joined by a line.
public enum BestOfNChart {
    public static func svg(means: [Double], title: String) -> String {
        let (w, h, left, right, top, bottom) = (640.0, 380.0, 70.0, 30.0, 40.0, 50.0)
        let ticks = niceTicks(means.min()!, max(means.max()!, means.min()! + 1e-6))
        let (y0, y1) = (ticks.first!, ticks.last!)
        let n = Double(max(means.count, 2))
        func x(_ k: Double) -> Double { left + (k - 1) / (n - 1) * (w - left - right) }
        func y(_ v: Double) -> Double { top + (y1 - v) / (y1 - y0) * (h - top - bottom) }
        var svg = svgOpening(width: w, height: h, title: title)
        for v in ticks {
            svg += String(
                format: "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", left, w - right,
                y(v),
                y(v))
            svg += String(
                format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%@</text>\n", left - 6, y(v) + 4, tickLabel(v))
        }
        for k in niceTicks(1, n) where k >= 1 && k <= n {
            svg += String(
                format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%@</text>\n", x(k), h - bottom + 18,
                tickLabel(k))
        }
        let points = means.enumerated().map { (x(Double($0.offset + 1)), y($0.element)) }
        let path = points.enumerated().map {
            String(format: "%@%.1f,%.1f", $0.offset == 0 ? "M" : "L", $0.element.0, $0.element.1)
        }
        svg += "<path d=\"\(path.joined(separator: " "))\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.8\"/>\n"
        for p in points {
            svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#1f77b4\"/>\n", p.0, p.1)
        }
        svg += """
            <text x="\(w / 2)" y="\(h - 12)" text-anchor="middle">samples per prompt (N)</text>
            <text x="18" y="\(h / 2)" transform="rotate(-90 18 \(h / 2))" text-anchor="middle">mean best reward of N</text>
            </svg>

            """
        return svg
    }
}

/// PPO's two curves against the iteration: the mean raw reward (above) and the KL to the reference per
/// sequence (below), each for the training rollouts (line) and the held-out prompts (points).
public enum PPOChart {
    public struct Series {
        public var iterations: [Double]
        public var values: [Double]
        public init(iterations: [Double], values: [Double]) { (self.iterations, self.values) = (iterations, values) }
    }

    public static func svg(
        reward: (train: Series, heldOut: Series), kl: (train: Series, heldOut: Series), title: String
    )
        -> String
    {
        let (w, panel, left, right, top, gap, bottom) = (640.0, 200.0, 70.0, 30.0, 40.0, 50.0, 50.0)
        let h = top + 2 * panel + gap + bottom
        let all = reward.train.iterations + reward.heldOut.iterations + [0, 1]
        let (x0, x1) = (all.min()!, all.max()!)
        func x(_ i: Double) -> Double { left + (i - x0) / max(x1 - x0, 1e-9) * (w - left - right) }
        var svg = svgOpening(width: w, height: h, title: title)
        for (p, (name, pair)) in [("mean reward (raw)", reward), ("KL to the reference per sequence", kl)].enumerated()
        {
            let values = pair.train.values + pair.heldOut.values
            let ticks = niceTicks(values.min() ?? 0, max(values.max() ?? 1, (values.min() ?? 0) + 1e-6))
            let (y0, y1) = (ticks.first!, ticks.last!)
            let offset = top + Double(p) * (panel + gap)
            func y(_ v: Double) -> Double { offset + (y1 - v) / (y1 - y0) * panel }
            for v in ticks {
                svg += String(
                    format: "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", left, w - right,
                    y(v), y(v))
                svg += String(
                    format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%@</text>\n", left - 6, y(v) + 4,
                    tickLabel(v))
            }
            svg += String(format: "<text x=\"%.0f\" y=\"%.0f\">%@</text>\n", left, offset - 8, name)
            let path = zip(pair.train.iterations, pair.train.values).enumerated().map { k, point in
                String(format: "%@%.1f,%.1f", k == 0 ? "M" : "L", x(point.0), y(point.1))
            }
            svg +=
                "<path d=\"\(path.joined(separator: " "))\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.6\"/>\n"
            for (i, v) in zip(pair.heldOut.iterations, pair.heldOut.values) {
                svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#d62728\"/>\n", x(i), y(v))
            }
        }
        for i in niceTicks(x0, x1) where i >= x0 && i <= x1 {
            svg += String(
                format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%@</text>\n", x(i), h - bottom + 18,
                tickLabel(i))
        }
        svg += """
            <text x="\(w / 2)" y="\(h - 12)" text-anchor="middle">iteration (line: training rollouts; points: held-out prompts)</text>
            </svg>

            """
        return svg
    }
}
