// What a JDBC program typically sends while only reading (metadata the way
// GUI clients ask for it, prepared statements past the server-prepare
// threshold, a cursor-backed fetch in a read-only transaction): run by
// capture_postgres_clients.sh with the PostgreSQL JDBC driver from Debian
// (libpostgresql-jdbc-java).

import java.sql.*;
import java.util.Properties;

public class JdbcReader {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "postgres");
        p.setProperty("ApplicationName", "jdbc read");
        p.setProperty("prepareThreshold", "1");
        try (Connection c = DriverManager.getConnection(args[0], p)) {
            c.setReadOnly(true);
            DatabaseMetaData md = c.getMetaData();
            md.getDatabaseProductVersion();
            try (ResultSet r = md.getSchemas()) { while (r.next()) {} }
            try (ResultSet r = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) { while (r.next()) {} }
            try (ResultSet r = md.getColumns(null, "public", "items", "%")) { while (r.next()) {} }
            try (ResultSet r = md.getPrimaryKeys(null, "public", "items")) { while (r.next()) {} }
            try (ResultSet r = md.getIndexInfo(null, "public", "items", false, true)) { while (r.next()) {} }
            try (ResultSet r = md.getImportedKeys(null, "public", "items")) { while (r.next()) {} }
            try (ResultSet r = md.getFunctions(null, "public", "%")) { while (r.next()) {} }
            try (ResultSet r = md.getTypeInfo()) { while (r.next()) {} }
            for (int i = 0; i < 3; i++) {
                try (PreparedStatement s = c.prepareStatement("SELECT id, name, price FROM items WHERE id = ?")) {
                    s.setInt(1, i + 1);
                    try (ResultSet r = s.executeQuery()) {
                        r.getMetaData().getColumnCount();
                        while (r.next()) {}
                    }
                }
            }
            c.setAutoCommit(false);
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            try (Statement s = c.createStatement()) {
                s.setFetchSize(1);
                try (ResultSet r = s.executeQuery("SELECT * FROM items ORDER BY id")) { while (r.next()) {} }
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.execute("SHOW search_path");
                try (ResultSet r = s.executeQuery("SELECT current_schema(), version()")) { while (r.next()) {} }
            }
        }
    }
}
