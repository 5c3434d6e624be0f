//! The protocol's numbers jitgate uses: capability flags, status flags,
//! command bytes and error codes.

pub mod caps {
    //! Capability flags (the subset jitgate names).
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const FOUND_ROWS: u32 = 0x0000_0002;
    pub const LONG_FLAG: u32 = 0x0000_0004;
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const IGNORE_SPACE: u32 = 0x0000_0100;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const INTERACTIVE: u32 = 0x0000_0400;
    pub const SSL: u32 = 0x0000_0800;
    pub const IGNORE_SIGPIPE: u32 = 0x0000_1000;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const MULTI_STATEMENTS: u32 = 0x0001_0000;
    pub const MULTI_RESULTS: u32 = 0x0002_0000;
    pub const PS_MULTI_RESULTS: u32 = 0x0004_0000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const CONNECT_ATTRS: u32 = 0x0010_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;

    /// What jitgate offers clients (plus SSL when it has a certificate).
    /// Deliberately absent: COMPRESS (the relay frames plain packets),
    /// LOCAL_FILES (no file leaves a developer's machine through the proxy),
    /// DEPRECATE_EOF and SESSION_TRACK (the relay reads classic EOF/OK
    /// packets), and MariaDB's extended capabilities (LONG_PASSWORD is set,
    /// so clients treat jitgate as a MySQL server and send none).
    pub const OFFERED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA;

    /// Flags that change what later packets look like or mean: the client's
    /// choice of these is passed to the upstream unchanged, so both legs of a
    /// session agree on them.
    pub const RELAYED: u32 = FOUND_ROWS
        | LONG_FLAG
        | IGNORE_SPACE
        | INTERACTIVE
        | TRANSACTIONS
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS;
}

pub mod status {
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
}

pub mod command {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;

    /// A command's protocol name, for audit records and errors.
    pub fn name(command: u8) -> &'static str {
        match command {
            0x00 => "COM_SLEEP",
            QUIT => "COM_QUIT",
            INIT_DB => "COM_INIT_DB",
            QUERY => "COM_QUERY",
            FIELD_LIST => "COM_FIELD_LIST",
            0x05 => "COM_CREATE_DB",
            0x06 => "COM_DROP_DB",
            0x07 => "COM_REFRESH",
            0x08 => "COM_SHUTDOWN",
            STATISTICS => "COM_STATISTICS",
            0x0a => "COM_PROCESS_INFO",
            0x0b => "COM_CONNECT",
            0x0c => "COM_PROCESS_KILL",
            0x0d => "COM_DEBUG",
            PING => "COM_PING",
            0x0f => "COM_TIME",
            0x10 => "COM_DELAYED_INSERT",
            CHANGE_USER => "COM_CHANGE_USER",
            0x12 => "COM_BINLOG_DUMP",
            0x13 => "COM_TABLE_DUMP",
            0x14 => "COM_CONNECT_OUT",
            0x15 => "COM_REGISTER_SLAVE",
            STMT_PREPARE => "COM_STMT_PREPARE",
            STMT_EXECUTE => "COM_STMT_EXECUTE",
            STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
            STMT_CLOSE => "COM_STMT_CLOSE",
            STMT_RESET => "COM_STMT_RESET",
            SET_OPTION => "COM_SET_OPTION",
            STMT_FETCH => "COM_STMT_FETCH",
            0x1d => "COM_DAEMON",
            0x1e => "COM_BINLOG_DUMP_GTID",
            RESET_CONNECTION => "COM_RESET_CONNECTION",
            0xfa => "COM_STMT_BULK_EXECUTE",
            _ => "an unknown command",
        }
    }
}

/// Error codes and SQLSTATEs jitgate answers with.
pub mod code {
    pub const CON_COUNT: (u16, &str) = (1040, "08004");
    pub const DB_ACCESS_DENIED: (u16, &str) = (1044, "42000");
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    pub const BAD_DB: (u16, &str) = (1049, "42000");
    pub const HANDSHAKE: (u16, &str) = (1043, "08S01");
    pub const NET_PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    pub const UNKNOWN_THREAD: (u16, &str) = (1094, "HY000");
    pub const UNKNOWN_ERROR: (u16, &str) = (1105, "HY000");
    pub const NOT_SUPPORTED_YET: (u16, &str) = (1235, "42000");
    pub const QUERY_INTERRUPTED: (u16, &str) = (1317, "70100");
    pub const OPTION_PREVENTS_STATEMENT: (u16, &str) = (1290, "HY000");
    pub const NOT_SUPPORTED_AUTH_MODE: (u16, &str) = (1251, "08004");
    pub const CONNECTION_KILLED: (u16, &str) = (1927, "70100");
    pub const SECURE_TRANSPORT_REQUIRED: (u16, &str) = (3159, "HY000");
    pub const CONN_HOST_ERROR: (u16, &str) = (2003, "HY000");
    pub const SERVER_LOST: (u16, &str) = (2013, "HY000");
}
