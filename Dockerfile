# rocketlite: one small process that RocketMQ (remoting, gRPC) and MQTT clients talk to.
#   docker build -t rocketlite .
#   docker run -p 9876:9876 -p 10911:10911 -p 8081:8081 -p 1883:1883 -p 8080:8080 -v rl-data:/data rocketlite
# Behind a port mapping, tell remoting clients where the broker is: -e ROCKETLITE_ADVERTISED_HOST=<host>
# (and map the broker port 1:1). For throwaway test containers add --ephemeral (memory store).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rocketlite ./rocketlite
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /data rocketlite \
    && mkdir -p /data && chown rocketlite /data
USER rocketlite
WORKDIR /data
VOLUME ["/data"]
ENV ROCKETLITE_DATA_DIR=/data \
    ROCKETLITE_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
# NameServer, Broker (and VIP = Broker - 2), gRPC proxy, MQTT, HTTP (admin, metrics, MQTT over WebSocket)
EXPOSE 9876 10911 10909 8081 1883 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2).status == 200 else 1)"
ENTRYPOINT ["rocketlite"]
CMD ["serve"]
