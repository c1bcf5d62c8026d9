// The Parquet reader against pyarrow, which writes every file (scripts/parquet-cases.py, run here; `make test`
// installs pyarrow): each codec, data pages v1 and v2, dictionaries on, off and falling back to PLAIN
// mid-chunk, nulls, empty and multi-byte strings, values larger than a page, many row groups, lists of
// structs and a datatrove-style file decode to exactly the rows pyarrow reads back. Bad inputs are refused
// naming the file, row group, column and page.
import Dataset
import Foundation
import Testing

/// The files and expectations scripts/parquet-cases.py writes, made once for the suite.
let parquetCases: String = {
    let dir = NSTemporaryDirectory() + "parquet-cases-\(getpid())"
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/parquet-cases.py").path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", script, dir]
    process.standardOutput = FileHandle.nullDevice
    try? process.run()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? dir : ""
}()

func parquetCaseList(_ name: String) throws -> [[String: Any]] {
    try #require(!parquetCases.isEmpty, "python3 with pyarrow is needed (make test installs it)")
    let data = try #require(FileManager.default.contents(atPath: "\(parquetCases)/\(name)"))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
}

/// One canonical text for a JSON value, so rows compare whatever their dictionaries' order.
func canonical(_ value: Any) throws -> String {
    String(
        decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]),
        as: UTF8.self)
}

@Suite struct ParquetTests {
    @Test func everyFileDecodesToWhatPyarrowReadsBack() throws {
        let cases = try parquetCaseList("cases.json")
        #expect(cases.count >= 19)
        for c in cases {
            let path = c["file"] as! String
            let fields = c["fields"] as! [String]
            let expected = c["rows"] as! [Any]
            let file = try ParquetFile(path: path)
            let rows = try ParquetRows(file: file, fields: fields, groups: 0..<file.rowGroupCount)
            var got: [Any] = []
            while let row = try rows.next() {
                #expect(row.problem == nil, "\(path): \(row.problem ?? "")")
                #expect(row.number == got.count + 1)
                got.append(row.object)
            }
            #expect(got.count == file.rowCount, "\(path)")
            #expect(try canonical(got) == canonical(expected), "\(path)")
        }
    }

    /// Row-group parts partition the rows in order for any part count, and a text column reads as documents
    /// (nulls and empty strings are none).
    @Test func partsCoverEveryRowGroupOnceInOrder() throws {
        let path = "\(try #require(parquetCases.isEmpty ? nil : parquetCases))/row-groups.parquet"
        let file = try ParquetFile(path: path)
        #expect(file.rowGroupCount > 40)
        let whole = try documents(path, delimiter: nil, parts: 1)
        for parts in [2, 3, 7, 64] {
            let ranges = (0..<parts).map { file.rowGroups(part: $0, of: parts, weightedBy: ["text"]) }
            #expect(ranges.flatMap { Array($0) } == Array(0..<file.rowGroupCount), "\(parts) parts")
            #expect(try documents(path, delimiter: nil, parts: parts) == whole, "\(parts) parts")
        }
        let rows =
            try parquetCaseList("cases.json").first { ($0["file"] as! String) == path }!["rows"] as! [[String: Any]]
        #expect(whole == rows.compactMap { $0["text"] as? String }.filter { !$0.isEmpty })
    }

    @Test func badInputsAreRefusedNamingThePlace() throws {
        for c in try parquetCaseList("bad.json") {
            let path = c["file"] as! String
            let names = c["names"] as! [String]
            do {
                let reader = try DocumentReader(path: path, options: DocumentOptions())
                while try reader.next() != nil {}
                Issue.record("\(path) was read")
            } catch {
                let message = "\(error)"
                #expect(message.contains(path), "\(message)")
                for name in names { #expect(message.contains(name), "\(path): \(message) lacks \(name)") }
            }
        }
        // With --skip-bad-lines the row that is not UTF-8 is counted and skipped; the others are read.
        let reader = try DocumentReader(
            path: "\(parquetCases)/bad/not-utf8.parquet", options: DocumentOptions(skipBadLines: true))
        var texts: [String] = []
        while let d = try reader.next() { texts.append(d.text) }
        #expect(texts == ["fine", "also fine"] && reader.badLines == 1)
        #expect(reader.warnings.first?.contains("row 2") == true)
    }
}
