/// Why an object file cannot be read or turned into programs and maps.
///
/// Every malformed or unsupported input ends in one of these, never a trap: the parser checks
/// each offset and size against the file before reading it.
public struct ObjectError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of problem.
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, e.g. `truncated`.
        public let rawValue: String
        /// A kind by its words; the static members are the kinds this parser reports.
        public init(rawValue: String) { self.rawValue = rawValue }

        /// Not an ELF file, or not a 64-bit BPF one.
        public static let notBPFObject = Kind(rawValue: "not a BPF object")
        /// A header, section, table or record reaches past the end of the file or its section.
        public static let truncated = Kind(rawValue: "truncated")
        /// A field holds a value that no valid object has.
        public static let malformed = Kind(rawValue: "malformed")
        /// Valid, but something this loader does not do (named in the message).
        public static let unsupported = Kind(rawValue: "unsupported")
        /// A relocation or reference names a symbol, section or map that is not there.
        public static let missingSymbol = Kind(rawValue: "missing symbol")
        /// A section name that says no known program type.
        public static let unknownSection = Kind(rawValue: "unknown section")

        /// ``rawValue``.
        public var description: String { rawValue }
    }

    /// The kind of problem.
    public var kind: Kind
    /// What exactly, with the names and offsets involved.
    public var message: String

    /// Makes an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// `KIND: MESSAGE`, e.g. `unsupported: extern symbol 'x' …`.
    public var description: String { "\(kind): \(message)" }
}
