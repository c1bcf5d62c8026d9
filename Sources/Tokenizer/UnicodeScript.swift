// The Unicode script of a code point, from the generated table (UnicodeScriptTable.swift), with the
// adjustments SentencePiece's trainer makes: Hiragana, Katakana and U+30FC count as Han.

enum UnicodeScript {
    /// Sorted, non-overlapping ranges: (first, last, script index).
    private static let ranges: [(UInt32, UInt32, UInt16)] = unicodeScriptRanges.split(separator: ";").map { entry in
        let parts = entry.split(separator: ",").map { UInt32($0, radix: 16)! }
        return (parts[0], parts[1], UInt16(parts[2]))
    }
    static let unknown = UInt16(unicodeScriptNames.count)
    static let inherited = UInt16(unicodeScriptNames.firstIndex(of: "Inherited")!)
    private static let han = UInt16(unicodeScriptNames.firstIndex(of: "Han")!)
    private static let hiragana = UInt16(unicodeScriptNames.firstIndex(of: "Hiragana")!)
    private static let katakana = UInt16(unicodeScriptNames.firstIndex(of: "Katakana")!)

    /// Script index of `c` (`unknown` for unassigned code points).
    static func of(_ c: UInt32) -> UInt16 {
        if c == 0x30FC { return han }
        var lo = 0, hi = ranges.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if c < ranges[mid].0 {
                hi = mid - 1
            } else if c > ranges[mid].1 {
                lo = mid + 1
            } else {
                let s = ranges[mid].2
                return s == hiragana || s == katakana ? han : s
            }
        }
        return unknown
    }

    static func name(_ index: UInt16) -> String { index < unknown ? unicodeScriptNames[Int(index)] : "Unknown" }
}
