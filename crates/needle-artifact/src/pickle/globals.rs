//! Which globals a pickle may import.
//!
//! Allowlist, not denylist: exactly what `torch.load(weights_only=True)` accepts by default
//! (`torch/_weights_only_unpickler.py`, `_get_allowed_globals` and `_tensor_rebuild_functions`)
//! passes. Everything else is reported; the classification below only decides how loudly.

/// How a global imported by a pickle is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On the `weights_only=True` allowlist.
    Allowed,
    /// NumPy array reconstruction: refused by `weights_only=True` by default, runs no code itself.
    Numpy,
    /// Loads another pickle/marshal stream (a scanner sees only the outer one).
    NestedLoad,
    /// Reaches code execution, files, processes or the network. The text says why.
    Critical(&'static str),
    /// Not allowed, nothing more known.
    Unknown,
}

/// Storage/tensor class prefixes of PyTorch's legacy typed storages and tensor types.
const STORAGE_PREFIXES: &[&str] = &[
    "Double", "Float", "Long", "Int", "Short", "Char", "Byte", "Half", "Bool", "BFloat16",
    "ComplexDouble", "ComplexFloat", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
];
const TENSOR_PREFIXES: &[&str] =
    &["Double", "Float", "Long", "Int", "Short", "Char", "Byte", "Half", "Bool", "BFloat16"];

/// `str(dtype)` of every dtype `weights_only` registers (canonical names only, as it does).
const DTYPES: &[&str] = &[
    "float32", "float64", "float16", "bfloat16", "complex32", "complex64", "complex128", "uint8",
    "int8", "int16", "int32", "int64", "bool", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "uint16", "uint32", "uint64", "uint1", "uint2", "uint3", "uint4", "uint5",
    "uint6", "uint7", "int1", "int2", "int3", "int4", "int5", "int6", "int7", "bits1x8", "bits2x4",
    "bits4x2", "bits8", "bits16",
];

const QSCHEMES: &[&str] = &[
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

const REBUILD_FNS: &[&str] = &[
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
];

/// Python 2 module names that `pickle` maps for protocols < 3 (`_compat_pickle`), and that
/// PyTorch maps too (`IMPORT_MAPPING`).
pub fn normalize_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "commands" => "subprocess",
        "urllib2" => "urllib.request",
        "httplib" => "http.client",
        "Tkinter" => "tkinter",
        "thread" => "_thread",
        "StringIO" | "cStringIO" => "io",
        other => other,
    }
}

fn suffix_in(name: &str, suffix: &str, prefixes: &[&str]) -> bool {
    name.strip_suffix(suffix).is_some_and(|p| prefixes.contains(&p))
}

/// Whether `module.name` is on the `torch.load(weights_only=True)` default allowlist.
pub fn is_allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "torch" => {
            matches!(name, "Size" | "Tensor" | "device")
                || DTYPES.contains(&name)
                || QSCHEMES.contains(&name)
                || suffix_in(name, "Storage", STORAGE_PREFIXES)
                || suffix_in(name, "Tensor", TENSOR_PREFIXES)
        }
        "torch.cuda" => suffix_in(name, "Storage", STORAGE_PREFIXES) || suffix_in(name, "Tensor", TENSOR_PREFIXES),
        "torch.sparse" | "torch.cuda.sparse" => suffix_in(name, "Tensor", TENSOR_PREFIXES),
        "torch.storage" => matches!(name, "TypedStorage" | "UntypedStorage"),
        "_codecs" => name == "encode",
        "builtins" => matches!(name, "bytearray" | "set" | "complex"),
        "torch._utils" => REBUILD_FNS.contains(&name),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        _ => false,
    }
}

/// NumPy's array reconstruction globals (what `np.save`/pickling an ndarray produces).
fn is_numpy_reconstruct(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct" | "scalar")
            | ("numpy", "ndarray" | "dtype")
    ) || (module == "numpy.dtypes" && name.ends_with("DType") && !name.contains('.'))
}

/// Modules whose every global reaches code execution, processes, files or the network.
const CRITICAL_MODULES: &[(&str, &str)] = &[
    ("os", "operating system access (processes, files)"),
    ("posix", "operating system access (processes, files)"),
    ("nt", "operating system access (processes, files)"),
    ("subprocess", "runs processes"),
    ("_posixsubprocess", "runs processes"),
    ("pty", "spawns a terminal process"),
    ("sys", "interpreter internals"),
    ("socket", "network access"),
    ("_socket", "network access"),
    ("socketserver", "network access"),
    ("ssl", "network access"),
    ("_ssl", "network access"),
    ("urllib", "network access"),
    ("urllib3", "network access"),
    ("requests", "network access"),
    ("httpx", "network access"),
    ("aiohttp", "network access"),
    ("http", "network access"),
    ("ftplib", "network access"),
    ("smtplib", "network access"),
    ("telnetlib", "network access"),
    ("poplib", "network access"),
    ("imaplib", "network access"),
    ("nntplib", "network access"),
    ("xmlrpc", "network access"),
    ("webbrowser", "opens programs and URLs"),
    ("shutil", "file system access"),
    ("tempfile", "file system access"),
    ("glob", "file system access"),
    ("fileinput", "file system access"),
    ("linecache", "file system access"),
    ("mmap", "file system access"),
    ("io", "file system access"),
    ("_io", "file system access"),
    ("tarfile", "file system access"),
    ("zipfile", "file system access"),
    ("shelve", "file system access and nested pickles"),
    ("dbm", "file system access"),
    ("sqlite3", "file system access"),
    ("importlib", "imports arbitrary modules"),
    ("pkgutil", "imports arbitrary modules"),
    ("zipimport", "imports arbitrary modules"),
    ("runpy", "runs arbitrary modules"),
    ("site", "interpreter configuration"),
    ("code", "runs arbitrary code"),
    ("codeop", "compiles arbitrary code"),
    ("ctypes", "calls native code"),
    ("_ctypes", "calls native code"),
    ("cffi", "calls native code"),
    ("types", "builds code and function objects"),
    ("timeit", "runs arbitrary code"),
    ("cProfile", "runs arbitrary code"),
    ("profile", "runs arbitrary code"),
    ("trace", "runs arbitrary code"),
    ("pdb", "runs arbitrary code"),
    ("bdb", "runs arbitrary code"),
    ("pydoc", "runs processes (pager)"),
    ("venv", "creates environments and runs processes"),
    ("ensurepip", "installs packages"),
    ("pip", "installs packages and runs code"),
    ("setuptools", "builds and runs code"),
    ("distutils", "builds and runs code"),
    ("asyncio", "runs processes and network access"),
    ("multiprocessing", "runs processes"),
    ("concurrent", "runs code in other threads and processes"),
    ("threading", "runs code in threads"),
    ("_thread", "runs code in threads"),
    ("signal", "process signals"),
    ("platform", "runs processes"),
    ("logging", "writes files and opens network connections (handlers)"),
    ("gc", "interpreter internals"),
    ("inspect", "interpreter internals"),
    ("ast", "compiles code"),
    ("pickletools", "pickle machinery"),
    ("copyreg", "constructs arbitrary classes"),
    ("jinja2", "template rendering (code execution)"),
    ("yaml", "unsafe YAML loading"),
    ("IPython", "runs arbitrary code"),
    // Scanners importing themselves (a pickle that patches the scanner that reads it).
    ("picklescan", "imports a pickle scanner"),
    ("modelscan", "imports a pickle scanner"),
    ("fickling", "imports a pickle scanner"),
    ("modelaudit", "imports a pickle scanner"),
];

const NESTED_MODULES: &[&str] = &["pickle", "_pickle", "marshal", "dill", "cloudpickle", "joblib"];

/// Builtins that evaluate code, import, reach attributes or touch files.
const CRITICAL_BUILTINS: &[&str] = &[
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "breakpoint", "input", "help", "exit", "quit", "execfile", "file", "reload",
    "apply", "__build_class__", "memoryview", "object", "type", "super", "classmethod",
    "staticmethod", "property",
];

fn first_segment(module: &str) -> &str {
    module.split('.').next().unwrap_or(module)
}

/// Classifies one `(module, name)` pair exactly as given (no dotted-name walk).
fn classify_plain(module: &str, name: &str) -> Verdict {
    let module = normalize_module(module);
    if is_allowed(module, name) {
        return Verdict::Allowed;
    }
    if is_numpy_reconstruct(module, name) {
        return Verdict::Numpy;
    }
    let top = first_segment(module);
    if NESTED_MODULES.contains(&top) {
        return Verdict::NestedLoad;
    }
    match (module, name) {
        ("torch" | "torch.serialization", "load" | "_load" | "_legacy_load")
        | ("numpy" | "numpy.lib.npyio" | "numpy.lib._npyio_impl", "load" | "loads")
        | ("pandas" | "pandas.io.pickle", "read_pickle") => return Verdict::NestedLoad,
        ("builtins", n) if CRITICAL_BUILTINS.contains(&n) => {
            return Verdict::Critical("evaluates code, imports modules or reaches attributes")
        }
        ("functools", "partial" | "partialmethod" | "reduce" | "wraps" | "update_wrapper" | "singledispatch") => {
            return Verdict::Critical("calls an arbitrary callable")
        }
        ("operator", "attrgetter" | "methodcaller" | "call" | "getitem" | "setitem" | "delitem") => {
            return Verdict::Critical("reaches arbitrary attributes or calls methods")
        }
        ("torch", "hub" | "jit" | "package" | "_C" | "ops" | "classes" | "compile" | "_dynamo")
        | ("numpy", "fromfile" | "memmap" | "loadtxt" | "genfromtxt" | "tofile") => {
            return Verdict::Critical("loads code, native libraries or files")
        }
        _ => {}
    }
    if matches!(module, "torch.hub" | "torch.jit" | "torch.package" | "torch.utils.cpp_extension" | "torch._C" | "torch.ops"
        | "torch.classes" | "torch._dynamo" | "torch.serialization" | "torch.utils.data" | "numpy.testing" | "numpy.distutils" | "numpy.f2py" | "numpy.ctypeslib"
        | "numpy.lib.npyio" | "numpy.lib.format")
        || module.starts_with("torch.hub.")
        || module.starts_with("torch.jit.")
        || module.starts_with("torch.package.")
        || module.starts_with("torch._C.")
        || module.starts_with("numpy.testing.")
        || module.starts_with("numpy.distutils.")
        || module.starts_with("numpy.f2py.")
    {
        return Verdict::Critical("loads code, native libraries or files");
    }
    if let Some((_, why)) = CRITICAL_MODULES.iter().find(|(m, _)| *m == top) {
        return Verdict::Critical(why);
    }
    Verdict::Unknown
}

fn is_dunder(seg: &str) -> bool {
    seg.len() > 4 && seg.starts_with("__") && seg.ends_with("__")
}

fn is_identifier_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|seg| {
            let mut b = seg.bytes();
            b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80)
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
        })
}

/// Classifies a global as `find_class` would resolve it: the name may be dotted
/// (`pathlib` + `os.system` walks attributes), so every suffix of the full path is judged
/// and the worst verdict wins. Dunder segments (`__builtins__`, `__globals__`) are critical.
pub fn classify(module: &str, name: &str) -> Verdict {
    let module = normalize_module(module);
    let plain = classify_plain(module, name);
    if !name.contains('.') && !module.split('.').any(is_dunder) && !is_dunder(name) {
        return plain;
    }
    if plain == Verdict::Allowed {
        // Allowlist entries have no dotted names; a dunder name is never on it.
        return Verdict::Unknown;
    }
    let full = format!("{module}.{name}");
    let segs: Vec<&str> = full.split('.').collect();
    if segs.iter().any(|s| is_dunder(s)) {
        return Verdict::Critical("reaches interpreter internals through a dunder attribute");
    }
    let mut worst = plain;
    // Every window `segs[start..end-1]` as a module and `segs[end-1]` as the name.
    for start in 0..segs.len() {
        for end in (start + 2)..=segs.len() {
            let (Some(m), Some(n)) = (segs.get(start..end - 1), segs.get(end - 1)) else { continue };
            let v = classify_plain(&m.join("."), n);
            worst = worse(worst, v);
        }
    }
    match worst {
        Verdict::Allowed | Verdict::Numpy => Verdict::Unknown,
        other => other,
    }
}

fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Allowed => 0,
        Verdict::Numpy => 1,
        Verdict::Unknown => 2,
        Verdict::NestedLoad => 3,
        Verdict::Critical(_) => 4,
    }
}

fn worse(a: Verdict, b: Verdict) -> Verdict {
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Whether a module or name is something `import` could not resolve as written (control
/// characters, spaces, empty): worth saying in the finding.
pub fn is_odd_name(module: &str, name: &str) -> bool {
    !is_identifier_path(module) || !is_identifier_path(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_only_allowlist_passes() {
        for (m, n) in [
            ("collections", "OrderedDict"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"),
            ("torch._utils", "_rebuild_parameter_with_state"),
            ("torch._utils", "_rebuild_qtensor"),
            ("torch._utils", "_rebuild_sparse_tensor"),
            ("torch._tensor", "_rebuild_from_type_v2"),
            ("torch", "FloatStorage"),
            ("torch", "BFloat16Storage"),
            ("torch", "Size"),
            ("torch", "bfloat16"),
            ("torch", "float32"),
            ("torch.nn.parameter", "Parameter"),
            ("__builtin__", "set"),
            ("_codecs", "encode"),
        ] {
            assert_eq!(classify(m, n), Verdict::Allowed, "{m}.{n}");
        }
    }

    #[test]
    fn not_allowlisted_is_never_allowed() {
        // Near misses of allowlist entries.
        for (m, n) in [
            ("torch", "load"),
            ("torch", "float"), // str(torch.float) is torch.float32: the alias is not registered
            ("torch._utils", "_import_dotted_name"),
            ("collections", "OrderedDict.fromkeys"),
            ("collections", "defaultdict"),
            ("builtins", "dict"),
            ("torch", "FloatStorage.__init__"),
        ] {
            assert_ne!(classify(m, n), Verdict::Allowed, "{m}.{n}");
        }
    }

    #[test]
    fn critical_globals() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("subprocess", "Popen"),
            ("builtins", "eval"),
            ("__builtin__", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("pip", "main"),
            ("pydoc", "pipepager"),
            ("venv", "create"),
            ("functools", "partial"),
            ("timeit", "timeit"),
            ("cProfile", "run"),
            ("pkgutil", "resolve_name"),
            ("importlib", "import_module"),
            ("types", "CodeType"),
            ("logging", "FileHandler"),
            ("_io", "FileIO"),
            ("urllib.request", "urlopen"),
            ("ssl", "get_server_certificate"),
            ("operator", "attrgetter"),
            ("operator", "methodcaller"),
            ("multiprocessing.util", "spawnv_passfds"),
            ("smtplib", "SMTP"),
            ("asyncio.unix_events", "_UnixSubprocessTransport"),
            ("picklescan.scanner", "scan_pickle_bytes"),
            ("pathlib", "os.system"),
            ("numpy", "__builtins__.eval"),
            ("torch", "hub.load"),
        ] {
            assert!(matches!(classify(m, n), Verdict::Critical(_)), "{m}.{n}: {:?}", classify(m, n));
        }
    }

    #[test]
    fn nested_loaders() {
        for (m, n) in [
            ("pickle", "loads"),
            ("_pickle", "loads"),
            ("marshal", "loads"),
            ("dill", "loads"),
            ("torch.serialization", "load"),
            ("torch", "load"),
            ("numpy", "load"),
        ] {
            assert_eq!(classify(m, n), Verdict::NestedLoad, "{m}.{n}");
        }
    }

    #[test]
    fn numpy_and_unknown() {
        assert_eq!(classify("numpy.core.multiarray", "_reconstruct"), Verdict::Numpy);
        assert_eq!(classify("numpy", "dtype"), Verdict::Numpy);
        assert_eq!(classify("mymodel", "Net"), Verdict::Unknown);
        assert_eq!(classify("pathlib", "Path"), Verdict::Unknown);
        assert_eq!(classify("pathlib", "Path.home"), Verdict::Unknown);
    }

    #[test]
    fn odd_names() {
        assert!(is_odd_name("os\r", "system"));
        assert!(is_odd_name("", "x"));
        assert!(!is_odd_name("torch._utils", "_rebuild_tensor_v2"));
    }
}
