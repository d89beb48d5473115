import BPFAssembly
import CBPF
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// A BPF program loaded into the kernel. Releasing the last reference closes its descriptor;
/// the kernel frees the program once nothing (link, pin, map) holds it.
public final class Program: Sendable, CustomStringConvertible {
    /// The program's descriptor, which keeps the program loaded.
    public let descriptor: OwnedFileDescriptor
    /// The program type.
    public let type: ProgramType
    /// The name given at load time (the kernel keeps 15 characters).
    public let name: String
    /// The assembly it was loaded from, if it was loaded here (used to name labels in errors).
    public let assembly: Assembly?

    init(descriptor: OwnedFileDescriptor, type: ProgramType, name: String, assembly: Assembly?) {
        self.descriptor = descriptor
        self.type = type
        self.name = name
        self.assembly = assembly
    }

    /// Loads a program (`BPF_PROG_LOAD`).
    ///
    /// The expected attach type is set for types that require one (SK_LOOKUP →
    /// `BPF_SK_LOOKUP`). Maps named with `Statement.loadMap` are resolved to their
    /// descriptors: a ``Map`` given in the statement is used directly, any other name is
    /// looked up in `maps`. The first attempt runs without a verifier log; if it fails, the
    /// load is repeated with a log that grows until it fits, and a rejection is reported
    /// with the verifier's decisive line and the failing instruction and label.
    ///
    /// - Throws: ``BPFError``, of kind ``BPFError/Kind/verifierRejected`` when the verifier refused.
    public static func load(
        _ assembly: Assembly, type: ProgramType, name: String = "", license: String = "GPL",
        expectedAttachType: AttachType? = nil, maps: [String: Map] = [:], logger: Logger? = nil
    ) throws(BPFError) -> Program {
        let kernelName = sanitizedName(name)
        let what = "BPF_PROG_LOAD of \(type) program \"\(kernelName)\""
        var instructions = assembly.instructions
        var used: [Map] = []
        for (index, reference) in assembly.mapReferences {
            guard let map = reference.object as? Map ?? maps[reference.name] else {
                throw BPFError(
                    operation: what, code: EINVAL, kind: .invalidArgument,
                    hint: "instruction \(index) names map \"\(reference.name)\", which was not given; pass it in maps:")
            }
            used.append(map)
            instructions[index].immediate = map.descriptor.rawValue
        }
        return try loadEncoded(
            instructions.encoded(), type: type, kernelName: kernelName, license: license,
            attachType: expectedAttachType ?? type.requiredExpectedAttachType, debugInfo: nil, keepAlive: used,
            assembly: assembly, logger: logger)
    }

    /// Loads encoded instructions, with BTF records when `debugInfo` is given; the one path
    /// of every `BPF_PROG_LOAD`. On failure the load is repeated with a growing verifier log.
    static func loadEncoded(
        _ bytes: [UInt8], type: ProgramType, kernelName: String, license: String, attachType: AttachType?,
        debugInfo: ProgramDebugInfo?, keepAlive used: [Map], assembly: Assembly?, logger: Logger?
    ) throws(BPFError) -> Program {
        let what = "BPF_PROG_LOAD of \(type) program \"\(kernelName)\""
        func attempt(_ log: inout [CChar], level: UInt32) -> Int {
            bytes.withUnsafeBytes { insns in
                log.withUnsafeMutableBufferPointer { buffer in
                    let logBuffer = buffer.count > 0 ? buffer.baseAddress : nil
                    guard let debugInfo else {
                        return cbpf_prog_load(
                            type.rawValue, attachType?.rawValue ?? 0, insns.baseAddress, UInt32(bytes.count / 8),
                            license, kernelName, 0, logBuffer, UInt32(buffer.count), level, nil)
                    }
                    return debugInfo.functionInfo.withUnsafeBytes { functions in
                        debugInfo.lineInfo.withUnsafeBytes { lines in
                            var btf = cbpf_prog_btf(
                                btf_fd: debugInfo.btf?.rawValue ?? -1, func_info: functions.baseAddress,
                                func_info_rec_size: 8, func_info_cnt: UInt32(debugInfo.functionInfo.count / 8),
                                line_info: lines.baseAddress, line_info_rec_size: 16,
                                line_info_cnt: UInt32(debugInfo.lineInfo.count / 16),
                                kern_version: debugInfo.kernelVersion)
                            if debugInfo.functionInfo.isEmpty { btf.func_info = nil }
                            if debugInfo.lineInfo.isEmpty { btf.line_info = nil }
                            return cbpf_prog_load_btf(
                                type.rawValue, attachType?.rawValue ?? 0, insns.baseAddress, UInt32(bytes.count / 8),
                                license, kernelName, logBuffer, UInt32(buffer.count), level, &btf)
                        }
                    }
                }
            }
        }
        var noLog: [CChar] = []
        logger?.debug("loading program", metadata: ["name": "\(kernelName)", "instructions": "\(bytes.count / 8)"])
        let firstError: BPFError
        do {
            let fd = try withExtendedLifetime((used, debugInfo)) {
                () throws(BPFError) in try kernelCall(what, retry: .programLoad) { attempt(&noLog, level: 0) }
            }
            return Program(
                descriptor: OwnedFileDescriptor(adopting: Int32(fd)), type: type, name: kernelName, assembly: assembly)
        } catch {
            firstError = error
        }
        if firstError.code == EPERM { throw firstError }
        // Again, with a verifier log that grows until it fits.
        var size = 256 * 1024
        while true {
            var log = [CChar](repeating: 0, count: size)
            let result = withExtendedLifetime((used, debugInfo)) { attempt(&log, level: 1) }
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if result >= 0 {
                // Loaded on the second try (a transient failure); keep it.
                return Program(
                    descriptor: OwnedFileDescriptor(adopting: Int32(result)), type: type, name: kernelName,
                    assembly: assembly)
            }
            let code = Int32(-result)
            if code == ENOSPC && size < 64 * 1024 * 1024 {
                size *= 4
                continue
            }
            var error = BPFError(operation: what, code: code)
            if text.isEmpty {
                error.hint = loadHint(code, type: type) ?? error.hint
            } else {
                error.kind = .verifierRejected
                error.hint = nil
                error.verifierLog = text
                let parsed = VerifierLog(text)
                error.decisiveLine = parsed.decisiveLine
                error.failingInstruction = parsed.failingInstruction
                error.sourceLine = parsed.sourceLine
                if let slot = parsed.failingInstruction,
                    let (label, distance) = assembly?.nearestLabel(atOrBefore: slot)
                {
                    error.failingLabel = distance == 0 ? label.name : "\(label.name)+\(distance)"
                }
            }
            logger?.debug("program load failed", metadata: ["error": "\(error)"])
            throw error
        }
    }

    static func loadHint(_ code: Int32, type: ProgramType) -> String? {
        switch code {
        case EINVAL:
            "the kernel refused the load attributes; if it does not know program type \(type) it is too old"
                + (type == .skLookup ? " (SK_LOOKUP needs Linux 5.9)" : "")
        case EPERM, EACCES: BPFError.defaultHint(code)
        default: nil
        }
    }

    static func sanitizedName(_ name: String) -> String {
        String(name.filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") }.prefix(15))
    }

    /// Opens a program pinned in a bpf filesystem (`BPF_OBJ_GET`).
    public static func openPinned(at path: String) throws(BPFError) -> Program {
        let fd = try kernelCall("open pinned program \(path)", hints: pinHints(path)) { cbpf_obj_get(path, 0) }
        let descriptor = OwnedFileDescriptor(adopting: Int32(fd))
        let info = try ProgramInfo(descriptor: descriptor)
        return Program(descriptor: descriptor, type: info.type, name: info.name, assembly: nil)
    }

    /// Opens a loaded program by id (`BPF_PROG_GET_FD_BY_ID`).
    public static func open(id: UInt32) throws(BPFError) -> Program {
        let fd = try kernelCall("open program id \(id)") { cbpf_fd_by_id(Int32(BPF_PROG_GET_FD_BY_ID.rawValue), id, 0) }
        let descriptor = OwnedFileDescriptor(adopting: Int32(fd))
        let info = try ProgramInfo(descriptor: descriptor)
        return Program(descriptor: descriptor, type: info.type, name: info.name, assembly: nil)
    }

    /// Pins the program at `path` in a bpf filesystem, so it outlives this process (`BPF_OBJ_PIN`).
    public func pin(at path: String) throws(BPFError) {
        try kernelCall("pin program at \(path)", hints: pinHints(path)) { cbpf_obj_pin(descriptor.rawValue, path) }
    }

    /// What the kernel knows of the program (`BPF_OBJ_GET_INFO_BY_FD`).
    public func info() throws(BPFError) -> ProgramInfo { try ProgramInfo(descriptor: descriptor) }

    /// The instructions as the kernel holds them after verification (`xlated`), decoded
    /// without field checks (the kernel rewrites some fields).
    public func translatedInstructions() throws(BPFError) -> [Instruction] {
        var info = bpf_prog_info()
        try objectInfo(descriptor, "read program info", &info)
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        var buffer = [UInt8](repeating: 0, count: Int(info.xlated_prog_len))
        var second = bpf_prog_info()
        second.xlated_prog_len = info.xlated_prog_len
        length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try kernelCall("read translated instructions") {
            buffer.withUnsafeMutableBytes { raw in
                second.xlated_prog_insns = UInt64(UInt(bitPattern: raw.baseAddress))
                return cbpf_obj_info(descriptor.rawValue, &second, &length)
            }
        }
        return Instruction.decodeUnchecked(Array(buffer.prefix(Int(second.xlated_prog_len))))
    }

    /// Runs the program on a given input (`BPF_PROG_TEST_RUN`).
    ///
    /// - Parameters:
    ///   - context: the context passed in (for SK_LOOKUP, the 72-byte `struct bpf_sk_lookup`).
    ///   - data: packet data, for the program types that take it (SK_LOOKUP takes none).
    ///   - count: how many times to run; the duration is the average per run.
    ///   - flags: `BPF_F_TEST_*` flags of the test run.
    public func testRun(
        context: [UInt8]? = nil, data: [UInt8]? = nil, repeat count: UInt32 = 1, flags: UInt32 = 0
    ) throws(BPFError) -> TestRunResult {
        var contextOut = [UInt8](repeating: 0, count: context?.count ?? 0)
        var contextOutSize = UInt32(contextOut.count)
        var dataOut = [UInt8](repeating: 0, count: (data?.count ?? 0) + 256)
        var dataOutSize = UInt32(data == nil ? 0 : dataOut.count)
        var returnValue: UInt32 = 0
        var duration: UInt32 = 0
        let contextIn = context ?? []
        let dataIn = data ?? []
        let unsupported = "this kernel cannot test-run \(type) programs"
        let hints = [kernelNotSupported: unsupported, EOPNOTSUPP: unsupported]
        try kernelCall("BPF_PROG_TEST_RUN of \(type) program \"\(name)\"", hints: hints) {
            contextIn.withUnsafeBytes { ci in
                contextOut.withUnsafeMutableBytes { co in
                    dataIn.withUnsafeBytes { di in
                        dataOut.withUnsafeMutableBytes { dout in
                            cbpf_prog_test_run(
                                descriptor.rawValue, ci.count > 0 ? ci.baseAddress : nil, UInt32(ci.count),
                                co.count > 0 ? co.baseAddress : nil, &contextOutSize,
                                di.count > 0 ? di.baseAddress : nil,
                                UInt32(di.count), data == nil ? nil : dout.baseAddress, &dataOutSize, count, flags,
                                &returnValue, &duration)
                        }
                    }
                }
            }
        }
        return TestRunResult(
            returnValue: returnValue, nanosecondsPerRun: duration,
            context: Array(contextOut.prefix(Int(contextOutSize))),
            data: data == nil ? nil : Array(dataOut.prefix(Int(dataOutSize))))
    }

    /// `TYPE program "NAME"`, e.g. `sk_lookup program "dispatcher"`.
    public var description: String { "\(type) program \"\(name)\"" }
}

/// What `BPF_PROG_TEST_RUN` gave back.
public struct TestRunResult: Sendable, Hashable {
    /// The program's return value (for SK_LOOKUP: 1 = SK_PASS, 0 = SK_DROP).
    public var returnValue: UInt32
    /// The kernel-measured time per run, in nanoseconds.
    public var nanosecondsPerRun: UInt32
    /// The context after the run.
    public var context: [UInt8]
    /// The packet data after the run, if data was given.
    public var data: [UInt8]?
}

/// Facts about a loaded program, from `BPF_OBJ_GET_INFO_BY_FD`.
public struct ProgramInfo: Sendable, Hashable, Codable {
    /// The kernel's id for the program.
    public var id: UInt32
    /// The program type.
    public var type: ProgramType
    /// The program's name, as the kernel stores it (at most 15 characters).
    public var name: String
    /// The kernel's tag: a hash of the instructions, as 16 hex digits.
    public var tag: String
    /// The number of instructions after verification (8-byte slots).
    public var instructionCount: Int
    /// The ids of the maps the program uses.
    public var mapIDs: [UInt32]
    /// Bytes of JIT-compiled code (0 if not JITed).
    public var jitedSize: UInt32
    /// Run time and count, when `BPF_STATS_RUN_TIME` is enabled.
    public var runTimeNanoseconds: UInt64
    /// How many times the program ran, when `BPF_STATS_RUN_TIME` is enabled.
    public var runCount: UInt64

    init(descriptor: OwnedFileDescriptor) throws(BPFError) {
        var info = bpf_prog_info()
        try objectInfo(descriptor, "read program info", &info)
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        var mapIDs = [UInt32](repeating: 0, count: Int(info.nr_map_ids))
        if !mapIDs.isEmpty {
            var second = bpf_prog_info()
            second.nr_map_ids = info.nr_map_ids
            length = UInt32(MemoryLayout<bpf_prog_info>.size)
            try kernelCall("read program map ids") {
                mapIDs.withUnsafeMutableBufferPointer { buffer in
                    second.map_ids = UInt64(UInt(bitPattern: buffer.baseAddress))
                    return cbpf_obj_info(descriptor.rawValue, &second, &length)
                }
            }
        }
        id = info.id
        type = ProgramType(rawValue: info.type)
        name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        tag = withUnsafeBytes(of: info.tag) {
            $0.map { byte in byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }.joined()
        }
        instructionCount = Int(info.xlated_prog_len) / 8
        self.mapIDs = mapIDs
        jitedSize = info.jited_prog_len
        runTimeNanoseconds = info.run_time_ns
        runCount = info.run_cnt
    }

    /// Every program loaded in the kernel (`BPF_PROG_GET_NEXT_ID`), optionally of one type.
    public static func all(type: ProgramType? = nil) throws(BPFError) -> [ProgramInfo] {
        var result: [ProgramInfo] = []
        for id in try objectIDs(BPF_PROG_GET_NEXT_ID) {
            // A program can go away between listing and opening; skip it.
            guard let program = try? Program.open(id: id), let info = try? program.info() else { continue }
            if type == nil || info.type == type { result.append(info) }
        }
        return result
    }
}

extension ProgramType: Codable {
    /// Decodes a `bpftool` name (`sk_lookup`) or a raw number.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let name = try? container.decode(String.self), let type = ProgramType(name: name) {
            self = type
        } else {
            self = ProgramType(rawValue: try container.decode(UInt32.self))
        }
    }
    /// Encodes the `bpftool` name (``description``).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD` into a kernel info struct (`bpf_prog_info`, `bpf_map_info`).
func objectInfo<Info>(_ descriptor: OwnedFileDescriptor, _ what: String, _ info: inout Info) throws(BPFError) {
    var length = UInt32(MemoryLayout<Info>.size)
    try kernelCall(what) {
        withUnsafeMutableBytes(of: &info) { cbpf_obj_info(descriptor.rawValue, $0.baseAddress, &length) }
    }
}

func objectIDs(_ command: bpf_cmd) throws(BPFError) -> [UInt32] {
    var ids: [UInt32] = []
    var current: UInt32 = 0
    while true {
        var next: UInt32 = 0
        let result = cbpf_next_id(Int32(command.rawValue), current, &next)
        if result == -Int(ENOENT) { return ids }
        if result < 0 { throw BPFError(operation: "list BPF objects", code: Int32(-result)) }
        ids.append(next)
        current = next
    }
}

/// What to say when pinning or opening a pin at `path` fails (evaluated only on failure).
func pinHints(_ path: String) -> [Int32: String] {
    var hints: [Int32: String] = [
        ENOENT: "nothing is pinned at \(path), or its directory does not exist",
        EEXIST: "something is already pinned at \(path); remove it first",
        EINVAL: "\(path) is not on a bpf filesystem, or is not a BPF object",
    ]
    if !BPFFileSystem.isMounted(at: parentDirectory(path)) {
        hints[EPERM] =
            "\(parentDirectory(path)) is not on a bpf filesystem; mount one (mount -t bpf -o mode=0700 bpf DIR)"
    }
    return hints
}

func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// The parts of a verifier log that explain a rejection.
public struct VerifierLog: Sendable, Hashable {
    /// The line that says why: the last message before the statistics.
    public var decisiveLine: String?
    /// The last instruction the verifier reported processing (`12: (61) r1 = …`).
    public var failingInstruction: Int?
    /// The last source line the verifier printed (`; text @ file.c:12`, from line info),
    /// as `file.c:12: text`.
    public var sourceLine: String?

    /// Picks the decisive line and failing instruction out of a verifier log's text.
    public init(_ text: String) {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
        let statistics = [
            "processed ", "verification time", "stack depth", "-- END PROG LOAD LOG --", "max_states_per_insn",
        ]
        let meaningful = lines.filter { line in !statistics.contains { line.hasPrefix($0) } }
        decisiveLine = meaningful.last
        for line in meaningful.reversed() where line.hasPrefix("; ") {
            let characters = Array(line)
            guard
                let at = stride(from: characters.count - 3, through: 2, by: -1).first(where: {
                    characters[$0] == " " && characters[$0 + 1] == "@" && characters[$0 + 2] == " "
                })
            else { continue }
            sourceLine = "\(String(characters[(at + 3)...])): \(String(characters[2..<at]))"
            break
        }
        for line in meaningful.reversed() {
            let digits = line.prefix { $0.isNumber }
            if !digits.isEmpty, line.dropFirst(digits.count).hasPrefix(": (") {
                failingInstruction = Int(digits)
                break
            }
        }
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
