#!/usr/bin/env python3
"""An S3 endpoint that reads every byte and keeps none, for scripts/bench only.

It answers the calls `lifeboat save` makes (multipart upload, put, head, copy) and
remembers object sizes, not contents. A bench row against it shows what a save
costs when the store is not the bottleneck: the S3 server bench rows share this
machine's cores with etcd and lifeboat, which an S3 service does not.
Usage: bench-s3-sink.py PORT
"""
import http.server
import sys
import threading
import time
import urllib.parse
import uuid
from email.utils import formatdate

XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
sizes = {}      # key -> size
uploads = {}    # upload id -> {part number: size}
lock = threading.Lock()


def iso_now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, each reply waits 40 ms for an ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def target(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.lstrip("/").split("/", 1)
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        return key, urllib.parse.parse_qs(url.query, keep_blank_values=True)

    def drain(self):
        left = int(self.headers.get("Content-Length") or 0)
        total = left
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        return total

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def xml(self, body):
        self.reply(200, ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode(),
                   [("Content-Type", "application/xml")])

    def copy_size(self):
        source = urllib.parse.unquote(self.headers["x-amz-copy-source"]).lstrip("/").split("/", 1)[1]
        size = sizes.get(source, 0)
        wanted = self.headers.get("x-amz-copy-source-range")
        if wanted:
            first, last = wanted.split("=", 1)[1].split("-")
            size = int(last) - int(first) + 1
        return size

    def do_HEAD(self):
        key, _ = self.target()
        if not key:
            return self.reply(200)
        with lock:
            size = sizes.get(key)
        if size is None:
            return self.reply(404)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.send_header("ETag", '"sink"')
        self.end_headers()

    def do_POST(self):
        key, query = self.target()
        self.drain()
        if "uploads" in query:
            upload = uuid.uuid4().hex
            with lock:
                uploads[upload] = {}
            return self.xml(f"<InitiateMultipartUploadResult {XMLNS}><Bucket>b</Bucket><Key>{key}</Key>"
                            f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>")
        with lock:
            parts = uploads.pop(query["uploadId"][0], {})
            sizes[key] = sum(parts.values())
        self.xml(f"<CompleteMultipartUploadResult {XMLNS}><Bucket>b</Bucket><Key>{key}</Key>"
                 f'<ETag>"sink-{len(parts)}"</ETag></CompleteMultipartUploadResult>')

    def do_PUT(self):
        key, query = self.target()
        copying = "x-amz-copy-source" in self.headers
        size = self.drain()
        if copying:
            size = self.copy_size()
        if "uploadId" in query:
            with lock:
                uploads[query["uploadId"][0]][int(query["partNumber"][0])] = size
            if copying:
                return self.xml(f'<CopyPartResult {XMLNS}><ETag>"sink"</ETag>'
                                f"<LastModified>{iso_now()}</LastModified></CopyPartResult>")
            checksum = self.headers.get("x-amz-checksum-crc32c")
            return self.reply(200, headers=[("ETag", '"sink"')] + ([("x-amz-checksum-crc32c", checksum)] if checksum else []))
        with lock:
            if self.headers.get("If-None-Match") == "*" and key in sizes:
                return self.reply(412)
            sizes[key] = size
        if copying:
            return self.xml(f'<CopyObjectResult {XMLNS}><ETag>"sink"</ETag>'
                            f"<LastModified>{iso_now()}</LastModified></CopyObjectResult>")
        self.reply(200, headers=[("ETag", '"sink"')])

    def do_DELETE(self):
        key, query = self.target()
        with lock:
            uploads.pop(query.get("uploadId", [""])[0], None)
            sizes.pop(key, None)
        self.reply(204)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
    server.daemon_threads = True
    server.serve_forever()
