// Hnapi.cs — .NET bindings of libhnapi, the C ABI of hnsecure (include/hnapi.h).
//
// A sending application uses HnapiClient (SendReceive, or Send and Receive with tickets);
// a receiving application uses HnapiServer (Receive, Respond). Failures are
// HnapiException, carrying the C code and the library's last-error sentence. Both classes
// may be shared by all the threads of a process, as the C objects may.
//
// The library is loaded as "hnapi": libhnapi.so (found through LD_LIBRARY_PATH or the
// application's folder), libhnapi.dylib or hnapi.dll. This file compiles with Mono's mcs
// and with the .NET 6+ SDK (Hnapi.csproj); it uses no runtime-specific API.

using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

// The tests (tests/dotnet/HnapiTests.cs) read Call.InitialBuffer; when they are compiled
// against the packaged Hnapi.dll rather than with this file, they need to see it.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("HnapiTests")]

namespace Hnapi
{
    /// <summary>
    /// The return codes of the C ABI (enum HnetRtrn in hnapi.h), under their C names and
    /// values, which never change. A test compares this table with the header's.
    /// </summary>
    public enum HnetRtrn : int
    {
        HNET_RTRN_SUCCESS = 0,
        HNET_RTRN_INVALIDPARAMETER = 1,
        HNET_RTRN_INVALIDFORMATERROR = 2,
        HNET_RTRN_REMOTETIMEOUT = 3,
        HNET_RTRN_DOMAINMISMATCH = 4,
        HNET_RTRN_ENCRYPTIONERROR = 5,
        HNET_RTRN_BUFFERTOOSMALL = 6,
        HNET_RTRN_PENDING = 7,
        HNET_RTRN_CONFIGERROR = 8,
        HNET_RTRN_CONNECTIONERROR = 9,
        HNET_RTRN_UNKNOWNTICKET = 10,
        HNET_RTRN_INTERNALERROR = 11,
        HNET_RTRN_UNKNOWNREQUEST = 12,
        HNET_RTRN_TOOLARGE = 13,
        HNET_RTRN_SHUTDOWN = 14,
    }

    /// <summary>
    /// The functions of hnapi.h, one for one. Strings going in are NUL-terminated UTF-8
    /// byte arrays (see <see cref="Utf8.Z"/>), so that no platform's "ANSI" code page gets
    /// involved; strings coming back are pointers decoded by <see cref="Utf8.Decode"/>,
    /// never marshalled as string (the runtime would free the library's static memory).
    /// </summary>
    internal static class Native
    {
        private const string Lib = "hnapi";

        /// <summary>HnapiLogCallback: void (*)(int32_t level, const char *line, void *ctx).</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void HnapiLogCallback(int level, IntPtr line, IntPtr ctx);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr hnapi_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern IntPtr hnapi_code_name(int code);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern UIntPtr hnapi_last_error([Out] byte[] buf, UIntPtr cap);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_client_open([In] byte[] config_path, out IntPtr out_client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_client_open_toml([In] byte[] config_toml, [In] byte[] base_dir, out IntPtr out_client);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_send(IntPtr c, [In] byte[] msg, UIntPtr msg_len, uint timeout_ms, out ulong ticket);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_receive(IntPtr c, ulong ticket, uint wait_ms, [Out] byte[] buf, UIntPtr cap, out UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_send_receive(IntPtr c, [In] byte[] msg, UIntPtr msg_len, uint timeout_ms, [Out] byte[] buf, UIntPtr cap, out UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void hnapi_client_close(IntPtr c);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void hnapi_set_log_callback(HnapiLogCallback cb, IntPtr ctx, int max_level);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_server_open([In] byte[] config_path, out IntPtr out_server);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_server_receive(IntPtr s, uint wait_ms, out ulong request_id, [Out] byte[] buf, UIntPtr cap, out UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_server_respond(IntPtr s, ulong request_id, [In] byte[] msg, UIntPtr msg_len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void hnapi_server_close(IntPtr s);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern int hnapi_server_wait_connected(IntPtr s, uint wait_ms);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void hnapi_server_shutdown(IntPtr s);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
        internal static extern void hnapi_client_shutdown(IntPtr c);
    }

    /// <summary>UTF-8 across the boundary, by hand (portable to every runtime).</summary>
    internal static class Utf8
    {
        /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/>, or null for null.</summary>
        internal static byte[] Z(string s, string paramName)
        {
            if (s == null)
            {
                return null;
            }
            if (s.IndexOf('\0') >= 0)
            {
                throw new ArgumentException("the text contains a NUL character", paramName);
            }
            int n = Encoding.UTF8.GetByteCount(s);
            var z = new byte[n + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, z, 0);
            return z;
        }

        /// <summary>The NUL-terminated UTF-8 string at <paramref name="p"/> ("" for NULL).</summary>
        internal static string Decode(IntPtr p)
        {
            if (p == IntPtr.Zero)
            {
                return "";
            }
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0)
            {
                n++;
            }
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }
    }

    /// <summary>
    /// A call into libhnapi returned a non-zero code. <see cref="LastError"/> is the
    /// library's one-sentence explanation, read on the failing thread right after the
    /// call; it never contains message text.
    /// </summary>
    public sealed class HnapiException : Exception
    {
        /// <summary>The code the C function returned.</summary>
        public HnetRtrn Code { get; }

        /// <summary>The C function that failed (e.g. "hnapi_send_receive"), or null.</summary>
        public string Function { get; }

        /// <summary>The library's last-error sentence for this failure (may be empty).</summary>
        public string LastError { get; }

        /// <summary>An exception for <paramref name="code"/> with the library's explanation.</summary>
        public HnapiException(HnetRtrn code, string lastError)
            : this(code, lastError, null)
        {
        }

        internal HnapiException(HnetRtrn code, string lastError, string function)
            : base(Describe(code, lastError, function))
        {
            Code = code;
            LastError = lastError ?? "";
            Function = function;
        }

        private static string Describe(HnetRtrn code, string lastError, string function)
        {
            var text = new StringBuilder();
            if (function != null)
            {
                text.Append(function).Append(": ");
            }
            // The enum's own name (not hnapi_code_name): making an exception needs no native call.
            text.Append(Enum.IsDefined(typeof(HnetRtrn), code) ? code.ToString() : "HNET_RTRN_UNKNOWN(" + (int)code + ")");
            if (!string.IsNullOrEmpty(lastError))
            {
                text.Append(": ").Append(lastError);
            }
            return text.ToString();
        }

        /// <summary>
        /// The exception for a non-zero <paramref name="rc"/>. Call it on the thread of the
        /// failing call and before any other hnapi call there: it reads that thread's last error.
        /// </summary>
        internal static HnapiException FromLastCall(int rc, string function)
        {
            return new HnapiException((HnetRtrn)rc, HnapiLibrary.LastError(), function);
        }
    }

    /// <summary>The handle of an HnapiClient*; released with hnapi_client_close.</summary>
    internal sealed class ClientHandle : SafeHandle
    {
        internal ClientHandle(IntPtr client) : base(IntPtr.Zero, true)
        {
            SetHandle(client);
            OpenHandles.Add(this);
        }

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            OpenHandles.Remove(handle);
            Native.hnapi_client_close(handle);
            return true;
        }
    }

    /// <summary>The handle of an HnapiServer*; released with hnapi_server_close.</summary>
    internal sealed class ServerHandle : SafeHandle
    {
        internal ServerHandle(IntPtr server) : base(IntPtr.Zero, true)
        {
            SetHandle(server);
            OpenHandles.Add(this);
        }

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            OpenHandles.Remove(handle);
            Native.hnapi_server_close(handle);
            return true;
        }
    }

    /// <summary>
    /// The handles not yet released, closed when the process exits (ProcessExit).
    /// </summary>
    /// <remarks>
    /// Why: once the log callback has run on the library's own threads, the runtime knows
    /// those threads, and Mono waits for every thread it knows when the process exits;
    /// the library's threads end only when their client or server is closed, so a client
    /// kept for the life of the application (the usual way to share one) made the
    /// process hang at exit. Closing what is still open at ProcessExit ends them (and
    /// says goodbye to the gateway). Only weak references are kept: a forgotten handle is
    /// still finalized as any SafeHandle.
    /// </remarks>
    internal static class OpenHandles
    {
        private static readonly object s_gate = new object();
        private static readonly System.Collections.Generic.Dictionary<IntPtr, WeakReference> s_open =
            new System.Collections.Generic.Dictionary<IntPtr, WeakReference>();
        private static bool s_hooked;

        internal static void Add(SafeHandle h)
        {
            lock (s_gate)
            {
                if (!s_hooked)
                {
                    AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
                    s_hooked = true;
                }
                s_open[h.DangerousGetHandle()] = new WeakReference(h);
            }
        }

        internal static void Remove(IntPtr native)
        {
            lock (s_gate)
            {
                s_open.Remove(native);
            }
        }

        private static void OnProcessExit(object sender, EventArgs e)
        {
            var open = new System.Collections.Generic.List<SafeHandle>();
            lock (s_gate)
            {
                foreach (WeakReference w in s_open.Values)
                {
                    var h = w.Target as SafeHandle;
                    if (h != null)
                    {
                        open.Add(h);
                    }
                }
            }
            foreach (SafeHandle h in open)
            {
                // Closes now, or when a call still running on another thread returns.
                h.Dispose();
            }
            HnapiLibrary.StopLogging();
        }
    }

    /// <summary>What the wrappers share: handle use, times, buffers.</summary>
    internal static class Call
    {
        /// <summary>The first buffer for an answer or a request; a larger one is made on demand.</summary>
        internal const int InitialBuffer = 16 * 1024;

        /// <summary>
        /// Long waits are made of waits of at most this many milliseconds, so that Dispose
        /// from another thread ends a waiting Receive within this time instead of leaving
        /// the C object open (a SafeHandle is released only when no call uses it).
        /// </summary>
        internal const uint WaitSliceMs = 250;

        /// <summary>
        /// Takes a reference on <paramref name="h"/> for the duration of a native call (so
        /// that a concurrent Dispose closes it only afterwards) and returns the pointer.
        /// Pair with <see cref="SafeHandle.DangerousRelease"/>.
        /// </summary>
        internal static IntPtr Enter(SafeHandle h, string objectName)
        {
            bool added = false;
            try
            {
                h.DangerousAddRef(ref added);
            }
            catch (ObjectDisposedException)
            {
                throw new ObjectDisposedException(objectName);
            }
            if (!added)
            {
                throw new ObjectDisposedException(objectName);
            }
            return h.DangerousGetHandle();
        }

        /// <summary>
        /// A transaction timeout in ms: null is the configured default (0 in C); otherwise
        /// it must be positive and fit in 32 bits (rounded up to whole milliseconds).
        /// </summary>
        internal static uint TimeoutMs(TimeSpan? timeout, string paramName)
        {
            if (timeout == null)
            {
                return 0;
            }
            TimeSpan t = timeout.Value;
            if (t <= TimeSpan.Zero)
            {
                throw new ArgumentOutOfRangeException(paramName, "a timeout must be positive (null means the configured default)");
            }
            double ms = Math.Ceiling(t.TotalMilliseconds);
            if (ms > uint.MaxValue)
            {
                throw new ArgumentOutOfRangeException(paramName, "a timeout must be at most " + uint.MaxValue + " ms");
            }
            return (uint)ms;
        }

        /// <summary>
        /// A wait: null or Timeout.InfiniteTimeSpan waits until the answer (or request)
        /// exists (returns -1); TimeSpan.Zero polls; otherwise whole milliseconds, rounded up.
        /// </summary>
        internal static long WaitMs(TimeSpan? wait, string paramName)
        {
            if (wait == null || wait.Value == Timeout.InfiniteTimeSpan)
            {
                return -1;
            }
            TimeSpan w = wait.Value;
            if (w < TimeSpan.Zero)
            {
                throw new ArgumentOutOfRangeException(paramName, "a wait is zero (poll), positive, or null / Timeout.InfiniteTimeSpan (until it comes)");
            }
            double ms = Math.Ceiling(w.TotalMilliseconds);
            return ms >= long.MaxValue ? -1 : (long)ms;
        }

        /// <summary>How long the next slice of a wait may be in ms (0, a poll, when nothing is left).</summary>
        internal static uint Slice(long totalMs, Stopwatch clock)
        {
            if (totalMs < 0)
            {
                return WaitSliceMs;
            }
            long left = totalMs - clock.ElapsedMilliseconds;
            return left <= 0 ? 0 : (uint)Math.Min(left, WaitSliceMs);
        }

        /// <summary>True when a finite wait has nothing left after a slice of <paramref name="slice"/> ms.</summary>
        internal static bool WaitOver(long totalMs, Stopwatch clock, uint slice)
        {
            return totalMs >= 0 && (slice == 0 || clock.ElapsedMilliseconds >= totalMs);
        }

        internal static byte[] Exact(byte[] buf, UIntPtr len)
        {
            int n = checked((int)len.ToUInt64());
            if (n == buf.Length)
            {
                return buf;
            }
            var copy = new byte[n];
            Buffer.BlockCopy(buf, 0, copy, 0, n);
            return copy;
        }

        internal static byte[] Sized(UIntPtr len)
        {
            ulong n = len.ToUInt64();
            if (n > int.MaxValue)
            {
                throw new HnapiException(HnetRtrn.HNET_RTRN_TOOLARGE, "the answer needs " + n + " bytes, more than a .NET array holds");
            }
            return new byte[(int)n];
        }

        internal static void NotNull(object value, string paramName)
        {
            if (value == null)
            {
                throw new ArgumentNullException(paramName);
            }
        }
    }

    /// <summary>
    /// A sending application's connection to hnsecure: sends HL7 v2 requests through the
    /// gateway and receives their answers. Thread-safe: share one between all threads.
    /// </summary>
    /// <remarks>
    /// As Volume 5 (2.1.2) and the C contract say, when an HL7 answer exists — the
    /// receiver's, or an AR ACK the library built for a timeout (TXFR024E) or an
    /// unreachable gateway (TXFR029E), with MSH-3 HNAPI — the call succeeds and returns it;
    /// an <see cref="HnapiException"/> means no valid HL7 answer could be formed.
    /// </remarks>
    public sealed class HnapiClient : IDisposable
    {
        private readonly ClientHandle _handle;

        private HnapiClient(IntPtr client)
        {
            _handle = new ClientHandle(client);
        }

        /// <summary>Opens a client from the client.toml at <paramref name="configPath"/>.</summary>
        /// <exception cref="HnapiException">HNET_RTRN_CONFIGERROR, HNET_RTRN_DOMAINMISMATCH, …</exception>
        public static HnapiClient Open(string configPath)
        {
            Call.NotNull(configPath, nameof(configPath));
            IntPtr client;
            int rc = Native.hnapi_client_open(Utf8.Z(configPath, nameof(configPath)), out client);
            if (rc != 0)
            {
                throw HnapiException.FromLastCall(rc, "hnapi_client_open");
            }
            return new HnapiClient(client);
        }

        /// <summary>
        /// Opens a client from configuration text (the contents of a client.toml); relative
        /// paths in it are taken from <paramref name="baseDir"/> (the current directory when null).
        /// </summary>
        public static HnapiClient OpenToml(string toml, string baseDir)
        {
            Call.NotNull(toml, nameof(toml));
            IntPtr client;
            int rc = Native.hnapi_client_open_toml(Utf8.Z(toml, nameof(toml)), Utf8.Z(baseDir, nameof(baseDir)), out client);
            if (rc != 0)
            {
                throw HnapiException.FromLastCall(rc, "hnapi_client_open_toml");
            }
            return new HnapiClient(client);
        }

        /// <summary>
        /// Sends <paramref name="message"/> and waits for its answer, at most
        /// <paramref name="timeout"/> (null: the configured default, 70 s unless configured).
        /// Returns the answer byte for byte.
        /// </summary>
        public byte[] SendReceive(byte[] message, TimeSpan? timeout = null)
        {
            Call.NotNull(message, nameof(message));
            uint timeoutMs = Call.TimeoutMs(timeout, nameof(timeout));
            IntPtr c = Call.Enter(_handle, nameof(HnapiClient));
            try
            {
                var buf = new byte[Call.InitialBuffer];
                UIntPtr len;
                int rc = Native.hnapi_send_receive(c, message, (UIntPtr)(ulong)message.Length, timeoutMs, buf, (UIntPtr)(ulong)buf.Length, out len);
                if (rc == (int)HnetRtrn.HNET_RTRN_BUFFERTOOSMALL)
                {
                    // The contract: the same call, on the same thread, with the same message
                    // returns the kept answer without sending the message again. Only once:
                    // a second "too small" would mean the kept answer is gone, and calling
                    // again would send the message a second time.
                    buf = Call.Sized(len);
                    rc = Native.hnapi_send_receive(c, message, (UIntPtr)(ulong)message.Length, timeoutMs, buf, (UIntPtr)(ulong)buf.Length, out len);
                }
                if (rc != 0)
                {
                    throw HnapiException.FromLastCall(rc, "hnapi_send_receive");
                }
                return Call.Exact(buf, len);
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        /// <summary>
        /// <see cref="SendReceive(byte[], TimeSpan?)"/> for text: the message is sent as
        /// UTF-8 and the answer decoded as UTF-8 (use the byte[] overload for other encodings).
        /// </summary>
        public string SendReceive(string message, TimeSpan? timeout = null)
        {
            Call.NotNull(message, nameof(message));
            return Encoding.UTF8.GetString(SendReceive(Encoding.UTF8.GetBytes(message), timeout));
        }

        /// <summary>
        /// Starts a transaction and returns at once with its ticket, for
        /// <see cref="Receive"/>. A message without a usable MSH is refused here
        /// (HNET_RTRN_INVALIDFORMATERROR).
        /// </summary>
        public ulong Send(byte[] message, TimeSpan? timeout = null)
        {
            Call.NotNull(message, nameof(message));
            uint timeoutMs = Call.TimeoutMs(timeout, nameof(timeout));
            IntPtr c = Call.Enter(_handle, nameof(HnapiClient));
            try
            {
                ulong ticket;
                int rc = Native.hnapi_send(c, message, (UIntPtr)(ulong)message.Length, timeoutMs, out ticket);
                if (rc != 0)
                {
                    throw HnapiException.FromLastCall(rc, "hnapi_send");
                }
                return ticket;
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        /// <summary>
        /// The answer for <paramref name="ticket"/>, waiting up to <paramref name="wait"/>:
        /// null (or Timeout.InfiniteTimeSpan) waits until it exists — every transaction ends
        /// by its timeout —, as the C ABI's UINT32_MAX and a null wait in the Java bindings
        /// do; TimeSpan.Zero polls. Returns null when a finite wait ended before it arrived
        /// (HNET_RTRN_PENDING; the ticket stays valid).
        /// </summary>
        /// <exception cref="HnapiException">HNET_RTRN_UNKNOWNTICKET for a ticket that is unknown or already received.</exception>
        public byte[] Receive(ulong ticket, TimeSpan? wait = null)
        {
            long totalMs = Call.WaitMs(wait, nameof(wait));
            var clock = Stopwatch.StartNew();
            while (true)
            {
                uint slice = Call.Slice(totalMs, clock);
                IntPtr c = Call.Enter(_handle, nameof(HnapiClient));
                try
                {
                    var buf = new byte[Call.InitialBuffer];
                    UIntPtr len;
                    int rc = Native.hnapi_receive(c, ticket, slice, buf, (UIntPtr)(ulong)buf.Length, out len);
                    // The answer stays with the ticket: ask again, without waiting.
                    for (int tries = 0; rc == (int)HnetRtrn.HNET_RTRN_BUFFERTOOSMALL && tries < 4; tries++)
                    {
                        buf = Call.Sized(len);
                        rc = Native.hnapi_receive(c, ticket, 0, buf, (UIntPtr)(ulong)buf.Length, out len);
                    }
                    if (rc == 0)
                    {
                        return Call.Exact(buf, len);
                    }
                    if (rc != (int)HnetRtrn.HNET_RTRN_PENDING)
                    {
                        throw HnapiException.FromLastCall(rc, "hnapi_receive");
                    }
                }
                finally
                {
                    _handle.DangerousRelease();
                }
                if (Call.WaitOver(totalMs, clock, slice))
                {
                    return null;
                }
            }
        }

        /// <summary>
        /// Closes the client: its connection ends and answers not yet received are dropped.
        /// A call running on another thread finishes first. Later calls throw
        /// ObjectDisposedException.
        /// </summary>
        public void Dispose()
        {
            _handle.Dispose();
        }
    }

    /// <summary>A request the gateway routed to a server application.</summary>
    public sealed class HnapiRequest
    {
        /// <summary>What to answer it with (<see cref="HnapiServer.Respond"/>).</summary>
        public ulong Id { get; }

        /// <summary>The HL7 request, byte for byte.</summary>
        public byte[] Message { get; }

        /// <summary>A request; normally made by <see cref="HnapiServer.Receive"/>.</summary>
        public HnapiRequest(ulong id, byte[] message)
        {
            Call.NotNull(message, nameof(message));
            Id = id;
            Message = message;
        }
    }

    /// <summary>
    /// A receiving application: receives the requests the gateway routes to its
    /// application names and responds to each. Thread-safe.
    /// </summary>
    public sealed class HnapiServer : IDisposable
    {
        private readonly ServerHandle _handle;

        // One native receive at a time. No request can be lost without it: the library
        // queues a request whose buffer was too small (HNET_RTRN_BUFFERTOOSMALL) and hands
        // it to the next receive on any thread (src/ffi/server.rs). This lock makes that
        // next receive this thread's retry, with a buffer of the size the library asked
        // for, instead of another thread's whose buffer may be too small again. It costs
        // no concurrency: the library serves one waiting receiver at a time. A poll that
        // finds the lock taken returns null at once.
        private readonly object _receiving = new object();

        private HnapiServer(IntPtr server)
        {
            _handle = new ServerHandle(server);
        }

        /// <summary>
        /// Opens a server application from the server.toml at <paramref name="configPath"/>;
        /// it connects to the gateway in the background and keeps the connection up.
        /// </summary>
        public static HnapiServer Open(string configPath)
        {
            Call.NotNull(configPath, nameof(configPath));
            IntPtr server;
            int rc = Native.hnapi_server_open(Utf8.Z(configPath, nameof(configPath)), out server);
            if (rc != 0)
            {
                throw HnapiException.FromLastCall(rc, "hnapi_server_open");
            }
            return new HnapiServer(server);
        }

        /// <summary>
        /// The next request, waiting up to <paramref name="wait"/>: null (or
        /// Timeout.InfiniteTimeSpan) waits until one comes, TimeSpan.Zero polls. Returns null
        /// when a finite wait ended before one came. Throws ObjectDisposedException when the server is disposed,
        /// including while waiting (within a quarter of a second).
        /// </summary>
        public HnapiRequest Receive(TimeSpan? wait = null)
        {
            long totalMs = Call.WaitMs(wait, nameof(wait));
            var clock = Stopwatch.StartNew();
            while (true)
            {
                uint slice = Call.Slice(totalMs, clock);
                if (!Monitor.TryEnter(_receiving, (int)slice))
                {
                    // Another thread is receiving; this slice of the wait passed without a request.
                    if (_handle.IsClosed)
                    {
                        throw new ObjectDisposedException(nameof(HnapiServer));
                    }
                    if (Call.WaitOver(totalMs, clock, slice))
                    {
                        return null;
                    }
                    continue;
                }
                try
                {
                    HnapiRequest request = ReceiveOnce(Call.Slice(totalMs, clock));
                    if (request != null)
                    {
                        return request;
                    }
                }
                finally
                {
                    Monitor.Exit(_receiving);
                }
                if (Call.WaitOver(totalMs, clock, slice))
                {
                    return null;
                }
            }
        }

        private HnapiRequest ReceiveOnce(uint waitMs)
        {
            IntPtr s = Call.Enter(_handle, nameof(HnapiServer));
            try
            {
                var buf = new byte[Call.InitialBuffer];
                ulong id;
                UIntPtr len;
                int rc = Native.hnapi_server_receive(s, waitMs, out id, buf, (UIntPtr)(ulong)buf.Length, out len);
                // The request is kept for the next call (and _receiving keeps it for us).
                for (int tries = 0; rc == (int)HnetRtrn.HNET_RTRN_BUFFERTOOSMALL && tries < 4; tries++)
                {
                    buf = Call.Sized(len);
                    rc = Native.hnapi_server_receive(s, 0, out id, buf, (UIntPtr)(ulong)buf.Length, out len);
                }
                if (rc == 0)
                {
                    return new HnapiRequest(id, Call.Exact(buf, len));
                }
                if (rc == (int)HnetRtrn.HNET_RTRN_PENDING)
                {
                    return null;
                }
                throw HnapiException.FromLastCall(rc, "hnapi_server_receive");
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        /// <summary>
        /// Waits up to <paramref name="wait"/> (TimeSpan.Zero only looks) for a gateway to
        /// accept this server application: true when it is serving. Until then the gateway
        /// answers requests to its names with an AR (HNPS007E).
        /// </summary>
        public bool WaitConnected(TimeSpan wait)
        {
            long ms = Call.WaitMs(wait, nameof(wait));
            IntPtr s = Call.Enter(_handle, nameof(HnapiServer));
            try
            {
                int rc = Native.hnapi_server_wait_connected(s, ms < 0 ? uint.MaxValue : (uint)Math.Min(ms, uint.MaxValue - 1L));
                if (rc == 0)
                {
                    return true;
                }
                if (rc == (int)HnetRtrn.HNET_RTRN_PENDING)
                {
                    return false;
                }
                throw HnapiException.FromLastCall(rc, "hnapi_server_wait_connected");
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        /// <summary>
        /// Sends <paramref name="answer"/> (HL7 with a usable MSH) as the answer to
        /// <paramref name="requestId"/>.
        /// </summary>
        /// <exception cref="HnapiException">HNET_RTRN_UNKNOWNREQUEST, HNET_RTRN_CONNECTIONERROR, HNET_RTRN_INVALIDFORMATERROR, …</exception>
        public void Respond(ulong requestId, byte[] answer)
        {
            Call.NotNull(answer, nameof(answer));
            IntPtr s = Call.Enter(_handle, nameof(HnapiServer));
            try
            {
                int rc = Native.hnapi_server_respond(s, requestId, answer, (UIntPtr)(ulong)answer.Length);
                if (rc != 0)
                {
                    throw HnapiException.FromLastCall(rc, "hnapi_server_respond");
                }
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        /// <summary>
        /// Closes the server application: its connection to the gateway ends, and the
        /// gateway answers what it still waited for with an AR (TXFR024E).
        /// </summary>
        public void Dispose()
        {
            _handle.Dispose();
        }
    }

    /// <summary>The library as a whole: version, code names, log.</summary>
    public static class HnapiLibrary
    {
        // One delegate for the life of the process, so the function pointer the library
        // holds can never point to a collected delegate; it dispatches to s_callback.
        private static readonly Native.HnapiLogCallback s_thunk = OnLog;
        private static readonly object s_logGate = new object();
        private static volatile Action<int, string> s_callback;

        [ThreadStatic]
        private static bool t_inCallback;

        /// <summary>The library's version, e.g. "hnsecure 0.1.0".</summary>
        public static string Version => Utf8.Decode(Native.hnapi_version());

        /// <summary>The C name of a code ("HNET_RTRN_SUCCESS", …), or "HNET_RTRN_UNKNOWN".</summary>
        public static string CodeName(int code)
        {
            return Utf8.Decode(Native.hnapi_code_name(code));
        }

        /// <summary>This thread's last-error sentence (empty after a success).</summary>
        internal static string LastError()
        {
            var buf = new byte[512];
            ulong n = Native.hnapi_last_error(buf, (UIntPtr)(ulong)buf.Length).ToUInt64();
            if (n >= (ulong)buf.Length)
            {
                buf = new byte[checked((int)n + 1)];
                n = Native.hnapi_last_error(buf, (UIntPtr)(ulong)buf.Length).ToUInt64();
                n = Math.Min(n, (ulong)buf.Length - 1);
            }
            return Encoding.UTF8.GetString(buf, 0, (int)n);
        }

        /// <summary>
        /// Sends the library's log lines up to <paramref name="maxLevel"/> (1 error, 2 warn,
        /// 3 info, 4 debug, 5 trace) to <paramref name="callback"/>(level, line); a null
        /// callback or a level of 0 stops them. Replaces any earlier callback; once this
        /// returns, the earlier one is not called any more. The callback may run on any
        /// thread, including the library's own; exceptions it throws are discarded (they
        /// must not unwind into native code). Lines never contain message text. Safe to call
        /// from any thread, but not from inside the callback (InvalidOperationException: the
        /// library would deadlock).
        /// </summary>
        public static void SetLogCallback(Action<int, string> callback, int maxLevel)
        {
            if (t_inCallback)
            {
                throw new InvalidOperationException("SetLogCallback cannot be called from inside the log callback");
            }
            lock (s_logGate)
            {
                if (callback == null || maxLevel <= 0)
                {
                    Native.hnapi_set_log_callback(null, IntPtr.Zero, 0);
                    s_callback = null;
                }
                else
                {
                    s_callback = callback;
                    Native.hnapi_set_log_callback(s_thunk, IntPtr.Zero, maxLevel);
                }
            }
        }

        /// <summary>At process exit: no more calls into a runtime that is going away.</summary>
        internal static void StopLogging()
        {
            lock (s_logGate)
            {
                Native.hnapi_set_log_callback(null, IntPtr.Zero, 0);
                s_callback = null;
            }
        }

        private static void OnLog(int level, IntPtr line, IntPtr ctx)
        {
            Action<int, string> callback = s_callback;
            if (callback == null || t_inCallback)
            {
                return;
            }
            t_inCallback = true;
            try
            {
                callback(level, Utf8.Decode(line));
            }
            catch (Exception)
            {
                // An exception must not cross into the library's (native) frames.
            }
            finally
            {
                t_inCallback = false;
            }
        }
    }
}
