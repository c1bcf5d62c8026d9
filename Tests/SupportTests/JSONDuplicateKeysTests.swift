// Keys given twice in a JSON document, which the parsers accept silently.
import Support
import Testing

@Suite struct JSONDuplicateKeysTests {
    func first(_ text: String) -> JSONDuplicateKeys.Duplicate? { JSONDuplicateKeys.first(in: Array(text.utf8)) }

    /// A key twice in one object is found with both lines and the keys around it; the same key in different
    /// objects, and keys, colons or quotes inside strings, are not duplicates.
    @Test func findsKeysGivenTwice() {
        #expect(first(#"{"a": 1, "a": 2}"#) == .init(path: "a", firstLine: 1, secondLine: 1))
        #expect(
            first("{\"train\": {\"lr\": 1,\n \"steps\": 2,\n \"lr\": 3}}")
                == .init(path: "train.lr", firstLine: 1, secondLine: 3))
        #expect(first(#"{"model": {"dim": 1}, "train": {"dim": 1}, "x": [{"k": 1}, {"k": 2}]}"#) == nil)
        #expect(first(#"{"a": "b\": c", "c": "\"a\": 1", "d": {"a": 1}}"#) == nil)
        #expect(first(#"{"m": {"heads": ["lm_head", "value"], "heads": []}}"#)?.path == "m.heads")
    }
}
